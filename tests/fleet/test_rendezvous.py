"""The ownership rule: balance, minimal movement on join/leave, zones, weights, quorum."""

from __future__ import annotations

from collections import Counter

import pytest

from trioprobe.fleet.quorum import notice_key, notifier, verdict
from trioprobe.fleet.rendezvous import Member, key_of, owners

KEYS = [key_of("web", f"http://10.0.{i // 256}.{i % 256}/health") for i in range(10_000)]


def _assign(members: list[Member], replicas: int = 1) -> list[tuple[str, ...]]:
    return [owners(k, members, replicas) for k in KEYS]


def _members(n: int) -> list[Member]:
    return [Member(f"agent-{i}") for i in range(n)]


def test_balance_within_15_percent_over_10_agents() -> None:
    counts = Counter(o[0] for o in _assign(_members(10)))
    assert len(counts) == 10
    for name, count in counts.items():
        assert 850 <= count <= 1150, (name, count)


def test_replicas_are_distinct_and_balanced() -> None:
    assignment = _assign(_members(10), replicas=2)
    assert all(len(set(o)) == 2 for o in assignment)
    counts = Counter(name for o in assignment for name in o)
    for name, count in counts.items():
        assert 1700 <= count <= 2300, (name, count)


def test_join_moves_about_one_nth() -> None:
    before = _assign(_members(10))
    after = _assign(_members(11))
    moved = sum(b != a for b, a in zip(before, after, strict=True))
    share = moved / len(KEYS)
    assert share <= 1.3 / 11, share
    # And only to the newcomer: nothing moves between the old members.
    assert all(a == b or a == ("agent-10",) for b, a in zip(before, after, strict=True))


def test_leave_moves_only_the_leavers_keys() -> None:
    members = _members(10)
    before = _assign(members)
    after = _assign([m for m in members if m.name != "agent-3"])
    moved = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a]
    assert all(before[i] == ("agent-3",) for i in moved)
    assert len(moved) == sum(b == ("agent-3",) for b in before)
    assert len(moved) / len(KEYS) <= 1.3 / 10


def test_leave_with_replicas_keeps_the_survivor() -> None:
    members = _members(5)
    before = _assign(members, replicas=2)
    after = _assign([m for m in members if m.name != "agent-0"], replicas=2)
    for b, a in zip(before, after, strict=True):
        survivors = [n for n in b if n != "agent-0"]
        assert all(n in a for n in survivors)


def test_zones_spread_replicas() -> None:
    members = [Member(f"a{i}", zone="eu" if i < 7 else "us") for i in range(10)]
    for o in _assign(members, replicas=2):
        zones = {m.zone for m in members if m.name in o}
        assert zones == {"eu", "us"}


def test_more_replicas_than_zones_fills_from_the_best_ranked() -> None:
    members = [Member(f"a{i}", zone="eu" if i < 3 else "us") for i in range(6)]
    for o in _assign(members, replicas=3)[:500]:
        assert len(set(o)) == 3
        assert {m.zone for m in members if m.name in o} == {"eu", "us"}


def test_weights_give_proportional_shares() -> None:
    members = [Member("big", weight=3.0), *(Member(f"small-{i}") for i in range(3))]
    counts = Counter(o[0] for o in _assign(members))
    # Expected: big 3/6 = 5,000; each small 1/6 = 1,667 (within 10 %).
    assert 4500 <= counts["big"] <= 5500, counts
    for i in range(3):
        assert 1500 <= counts[f"small-{i}"] <= 1833, counts


def test_zero_weight_owns_nothing() -> None:
    members = [Member("drained", weight=0.0), *_members(3)]
    assert all("drained" not in o for o in _assign(members[:], replicas=2)[:1000])


def test_ownership_is_deterministic_whatever_the_member_order() -> None:
    members = _members(7)
    assert _assign(members, 2)[:2000] == _assign(list(reversed(members)), 2)[:2000]


def test_quorum_needs_m_live_owner_votes() -> None:
    assert not verdict(["a", "b"], {"a": 10}, quorum=2).down
    v = verdict(["a", "b"], {"a": 10, "b": 7}, quorum=2)
    assert v.down
    assert v.votes == 2
    assert v.epoch == 10
    assert verdict(["a", "b"], {"a": 10}, quorum=1) == verdict(["b", "a"], {"a": 10}, quorum=1)
    assert verdict(["a", "b"], {"a": 10}, quorum=1).epoch == 10


def test_quorum_ignores_votes_of_non_owners() -> None:
    # "c" lost the target (or is dead); its leftover vote must not complete the quorum.
    assert not verdict(["a", "b"], {"a": 3, "c": 4}, quorum=2).down


def test_quorum_shrinks_to_the_live_owners() -> None:
    v = verdict(["a"], {"a": 5}, quorum=2)
    assert v.down
    assert v.needed == 1
    assert not verdict([], {}, quorum=2).down
    with pytest.raises(ValueError, match="quorum"):
        verdict(["a"], {}, quorum=0)


def test_epoch_is_the_vote_that_completed_the_quorum() -> None:
    assert verdict(["a", "b", "c"], {"a": 9, "b": 4, "c": 30}, quorum=2).epoch == 9


def test_notifier_is_the_first_live_owner() -> None:
    members = _members(5)
    key = KEYS[0]
    first = owners(key, members, 2)
    assert notifier(first) == first[0]
    survivors = [m for m in members if m.name != first[0]]
    assert notifier(owners(key, survivors, 2)) == first[1]
    assert notifier(()) is None


def test_notice_key_is_agent_independent_and_distinguishes_events() -> None:
    a = notice_key("f", "web-down", "web", "http://x/", "fire", 42)
    assert a == notice_key("f", "web-down", "web", "http://x/", "fire", 42)
    assert a != notice_key("f", "web-down", "web", "http://x/", "resolve", 42)
    assert a != notice_key("f", "web-down", "web", "http://x/", "fire", 43)
