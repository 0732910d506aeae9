"""Fleet-wide acknowledgements: listed and taken on any agent, stored in etcd without a lease,
checked by whichever agent notifies, scoped to one firing (its epoch), deleted on resolve."""

from __future__ import annotations

import pytest
import trio

from trioprobe.alerting.api import AckError
from trioprobe.fleet.acks import Ack

from .test_agents import TARGETS, _events, _fleet, _key, _owners, _until

ACKS = b"trioprobe/fleet/f/acks/"


def _repeats(agent: object) -> list[int]:
    return [k for event, k, _ in _events(agent)]  # type: ignore[arg-type]


async def test_an_ack_on_any_agent_stops_the_repeats_of_every_notifier(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fake, agents = await _fleet(nursery, 4, replicas=2, quorum=1, repeat=10.0)
    target = TARGETS[7]
    first, second = _owners(agents, target)
    others = [a for a in agents if a not in (first, second)]
    second.down(target)
    await _until(lambda: bool(first.sent))
    epoch = first.alerts.firing[("web", target)].epoch
    ident = _key(target, "fire", epoch)
    await trio.sleep(12)
    assert [n.event for n in first.sent] == ["fire", "repeat"]
    # Every agent lists the fleet's firing under the same id, not acknowledged yet.
    for agent in agents:
        (listed,), held = agent.alerts.listing()
        assert held == []
        assert (listed["id"], listed["target"], listed["acknowledged"]) == (ident, target, False)
        assert listed["notifier"] == first.membership.info.name
    # An agent that neither probes nor notifies takes the ack.
    taker = others[0]
    assert await taker.alerts.acknowledge("no-such-id") is False
    assert await taker.alerts.acknowledge(ident) is True
    stored = fake.kv[ACKS + f"web\x00{target}".encode()]
    assert stored[2] == 0  # no lease: it outlives the agent that took it
    await _until(lambda: all(a.alerts.listing()[0][0]["acknowledged"] for a in agents))
    await trio.sleep(30)
    assert [n.event for n in first.sent] == ["fire", "repeat"]  # no repeat since the ack
    # The taker and the notifier die: the new notifier resends the fire (same key, which the
    # receiver drops), but no repeat, then or later.
    taker.scope.cancel()
    first.scope.cancel()
    await _until(lambda: bool(second.sent), limit=2 * 3.0 + 2)
    await trio.sleep(35)
    assert _events(second) == [("fire", 0, ident)]
    # The resolve goes out, and the notifier deletes the ack.
    second.down(target, down=False)
    await _until(lambda: second.sent[-1].event == "resolve")
    await _until(lambda: ACKS + f"web\x00{target}".encode() not in fake.kv, limit=2)
    # A new firing of the same target is a new epoch: the old ack does not silence it.
    second.down(target)
    await _until(lambda: second.sent[-1].event == "fire")
    new_epoch = second.alerts.firing[("web", target)].epoch
    assert new_epoch != epoch
    await trio.sleep(12)
    assert second.sent[-1].event == "repeat"
    assert second.sent[-1].key == _key(target, "repeat", new_epoch, 1)


async def test_a_stale_ack_of_an_earlier_firing_is_ignored(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """An ack whose resolve-time delete was lost (etcd down then) stays: it names its epoch."""
    fake, agents = await _fleet(nursery, 3, replicas=2, quorum=1, repeat=10.0)
    target = TARGETS[8]
    first, second = _owners(agents, target)
    second.down(target)
    await _until(lambda: bool(first.sent))
    epoch = first.alerts.firing[("web", target)].epoch
    await first.membership.put_ack("web", target, Ack(epoch - 1, "gone", 1.0))
    await trio.sleep(25)
    assert [n.event for n in first.sent] == ["fire", "repeat", "repeat"]
    assert first.alerts.listing()[0][0]["acknowledged"] is False
    second.down(target, down=False)
    await _until(lambda: first.sent[-1].event == "resolve")
    await trio.sleep(2)
    # Not this firing's: left alone (one small key per target at most).
    assert ACKS + f"web\x00{target}".encode() in fake.kv


async def test_an_ack_etcd_does_not_take_is_an_error_and_changes_nothing(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fake, agents = await _fleet(nursery, 3, replicas=2, quorum=1, repeat=10.0)
    target = TARGETS[9]
    first, second = _owners(agents, target)
    second.down(target)
    await _until(lambda: bool(first.sent))
    ident = first.alerts.listing()[0][0]["id"]
    assert isinstance(ident, str)
    fake.stop()
    with pytest.raises(AckError, match="etcd did not store it"):
        await second.alerts.acknowledge(ident)
    assert ("web", target) not in second.membership.acks
    await trio.sleep(11)
    assert [n.event for n in first.sent] == ["fire", "repeat"]  # fail-static: repeats go on
    fake.start()
    await _until(lambda: all(a.membership.connected for a in agents))
    assert await second.alerts.acknowledge(ident) is True
    await _until(lambda: first.alerts.listing()[0][0]["acknowledged"] is True)
    count = len(first.sent)
    await trio.sleep(30)
    assert len(first.sent) == count


async def test_a_held_fire_is_listed_as_held_and_cannot_be_acknowledged(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    from .test_agents import HOLD

    _, agents = await _fleet(nursery, 3, replicas=2, quorum=1, repeat=10.0)
    target = TARGETS[10]
    first, second = _owners(agents, target)
    HOLD[target] = "maintenance"
    try:
        second.down(target)
        await _until(lambda: ("web", target) in first.alerts.firing)
        for agent in agents:
            assert agent.alerts.listing() == (
                [],
                [{"probe": "web", "target": target, "held": "maintenance"}],
            )
        epoch = first.alerts.firing[("web", target)].epoch
        assert await first.alerts.acknowledge(_key(target, "fire", epoch)) is False
    finally:
        HOLD.pop(target)
