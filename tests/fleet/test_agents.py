"""The ownership filter and agreed alerts over several memberships on one fake etcd."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import trio

from trioprobe.alerting.notify import Notice
from trioprobe.alerting.state import DOWN, UP, Transition
from trioprobe.fleet._etcd import EtcdClient
from trioprobe.fleet.alerts import FleetAlerts
from trioprobe.fleet.membership import AgentInfo, Membership
from trioprobe.fleet.ownership import Ownership
from trioprobe.fleet.quorum import notice_key

from .fake_etcd import FakeEtcd

TTL = 3.0
TARGETS = [f"http://10.1.{i // 200}.{i % 200}/" for i in range(600)]


#: What every agent's hold function answers (a maintenance window or dependency the test opens).
HOLD: dict[str, str] = {}
#: The agents' wall clock: Trio's, moved to a plausible date (a vote's time must be positive).
EPOCH = 1.8e9


def _now() -> float:
    return EPOCH + trio.current_time()


class _Agent:
    def __init__(
        self,
        fake: FakeEtcd,
        name: str,
        replicas: int,
        quorum: int = 1,
        repeat: float = 0.0,
        *,
        rule: Callable[[str], tuple[str, int]] | None = None,
        hold: Callable[[str, str, str], str | None] | None = None,
    ) -> None:
        """``rule``: a probe's (alert, quorum), by default ``web-down`` with ``quorum``;
        ``hold``: why a fire is held, by default what :data:`HOLD` says of its target."""
        client = EtcdClient(["http://etcd.test"], client=httpx.AsyncClient(transport=fake))
        self.membership = Membership(client, "f", AgentInfo(name), lease_ttl=TTL)
        self.ownership = Ownership(self.membership, replicas)
        self.sent: list[Notice] = []
        self.alerts = FleetAlerts(
            self.membership,
            self.ownership,
            rule or (lambda probe: ("web-down", quorum)),
            lambda alert, notice: self.sent.append(notice),
            hold=hold or (lambda alert, probe, target: HOLD.get(target)),
            repeat_interval=lambda alert: repeat,
            now=_now,
        )
        self.scope = trio.CancelScope()
        self.targets = lambda: self.ownership.filter("web", TARGETS)

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.membership.run)
                nursery.start_soon(self.ownership.run)
                nursery.start_soon(self.alerts.run)
                nursery.start_soon(self._tick)
                task_status.started()

    async def _tick(self) -> None:
        # What the alerting service does once per probe interval (1 s here).
        while True:
            await trio.sleep(1)
            self.alerts.tick("web")

    def down(self, target: str, down: bool = True, since: float | None = None) -> None:
        old, new = (UP, DOWN) if down else (DOWN, UP)
        when = _now() if since is None else since
        self.alerts.local(Transition("web", target, old, new, when, 3, 3, "boom", "web-down"))


async def _until(pred: Callable[[], bool], limit: float = 30.0) -> None:
    with trio.fail_after(limit):
        while not pred():  # noqa: ASYNC110 - polling state another task changes
            await trio.sleep(0.05)


def _owners(agents: list[_Agent], target: str) -> tuple[_Agent, _Agent]:
    """The target's two owners, in rendezvous order (the first is the one that notifies)."""
    by_name = {a.membership.info.name: a for a in agents}
    first, second = agents[0].ownership.owners("web", target)
    return by_name[first], by_name[second]


async def _fleet(
    nursery: trio.Nursery, n: int, replicas: int, quorum: int = 1, repeat: float = 0.0
) -> tuple[FakeEtcd, list[_Agent]]:
    fake = FakeEtcd()
    nursery.start_soon(fake.run)
    agents = [_Agent(fake, f"agent-{i}", replicas, quorum, repeat) for i in range(n)]
    for agent in agents:
        await nursery.start(agent.run)
    await _until(lambda: all(len(a.membership.live()) == n for a in agents))
    return fake, agents


def _coverage(agents: list[_Agent]) -> dict[str, int]:
    counts = dict.fromkeys(TARGETS, 0)
    for agent in agents:
        for target in agent.targets():
            counts[target] += 1
    return counts


async def test_filter_covers_every_target_exactly_replicas_times(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 4, replicas=2)
    await trio.sleep(1)
    assert set(_coverage(agents).values()) == {2}
    sizes = [len(a.targets()) for a in agents]
    assert sum(sizes) == 2 * len(TARGETS)
    assert min(sizes) >= 0.7 * len(TARGETS) / 2


async def test_a_dead_agents_targets_are_taken_over(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=1)
    await trio.sleep(1)
    before = {a.membership.info.name: set(a.targets()) for a in agents}
    agents[0].scope.cancel()  # dies without revoking its lease
    survivors = agents[1:]
    start = trio.current_time()
    await _until(lambda: set(_coverage(survivors).values()) == {1})
    assert trio.current_time() - start <= TTL + 1
    # Only the dead agent's targets moved.
    for agent in survivors:
        assert before[agent.membership.info.name] <= set(agent.targets())


async def test_fail_static_keeps_the_assignment(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fake, agents = await _fleet(nursery, 3, replicas=1)
    await trio.sleep(1)
    before = [a.targets() for a in agents]
    fake.stop()
    await trio.sleep(10 * TTL)
    assert [a.targets() for a in agents] == before
    assert not any(a.membership.connected for a in agents)
    fake.start()
    await _until(lambda: all(a.membership.connected for a in agents))
    await trio.sleep(2 * TTL)
    assert [a.targets() for a in agents] == before


async def test_quorum_two_ignores_one_flaky_vantage_point(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=2, quorum=2)
    target = TARGETS[0]
    first, second = _owners(agents, target)
    second.down(target)
    await trio.sleep(2)
    assert not any(a.sent for a in agents)
    first.down(target)
    await _until(lambda: bool(first.sent))
    await trio.sleep(2)
    # Exactly one agent, the first owner, sent exactly one fire.
    assert [len(a.sent) for a in agents].count(1) == 1
    (notice,) = first.sent
    epoch = max(first.membership.votes[("web", target)].values())
    assert notice.event == "fire"
    assert notice.key == notice_key("f", "web-down", "web", target, "fire", epoch)
    second.down(target, down=False)
    await _until(lambda: len(first.sent) == 2)
    assert first.sent[1].event == "resolve"
    assert first.sent[1].key == notice_key("f", "web-down", "web", target, "resolve", epoch)
    assert not second.sent


async def test_quorum_one_fires_on_one_vote(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=2, quorum=1)
    target = TARGETS[1]
    first, second = _owners(agents, target)
    second.down(target)
    await _until(lambda: bool(first.sent))
    await trio.sleep(2)
    assert sum(len(a.sent) for a in agents) == 1


async def test_a_new_notifier_resends_under_the_same_key(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=2, quorum=1)
    target = TARGETS[2]
    first, second = _owners(agents, target)
    second.down(target)
    await _until(lambda: bool(first.sent))
    first.scope.cancel()  # the notifier dies (maybe before its webhook delivered)
    await _until(lambda: bool(second.sent), limit=TTL + 2)
    assert second.sent[0].event == "fire"
    assert second.sent[0].key == first.sent[0].key


@pytest.mark.parametrize("replicas", [1, 3])
async def test_ownership_is_the_same_on_every_agent(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, replicas: int
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=replicas)
    for target in TARGETS[:50]:
        assert len({a.ownership.owners("web", target) for a in agents}) == 1


def _events(agent: _Agent) -> list[tuple[str, int, str]]:
    return [(n.event, n.repeat, n.key) for n in agent.sent]


def _key(target: str, event: str, epoch: int, repeat: int = 0) -> str:
    return notice_key("f", "web-down", "web", target, event, epoch, repeat)


async def test_repeats_follow_the_firings_schedule_whoever_notifies(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=2, quorum=1, repeat=10.0)
    target = TARGETS[3]
    first, second = _owners(agents, target)
    third = next(a for a in agents if a not in (first, second))
    # Seen down 25 s ago (its failure_threshold took that long): repeats are due at
    # since + 10 k, so the first one comes 5 s after the fire, not 10.
    since = _now() - 25
    second.down(target, since=since)
    await _until(lambda: bool(first.sent))
    epoch = first.alerts.firing[("web", target)].epoch
    await trio.sleep(since + 40.5 - _now())
    assert _events(first) == [
        ("fire", 0, _key(target, "fire", epoch)),
        ("repeat", 3, _key(target, "repeat", epoch, 3)),
        ("repeat", 4, _key(target, "repeat", epoch, 4)),
    ]
    assert first.sent[1].transition.since == since  # the vote's time, on every agent
    assert not second.sent
    assert not third.sent
    # The notifier dies between repeats: the new one sends the fire and the last repeat again
    # (the receiver drops both: same keys), then carries on with the same schedule and keys.
    first.scope.cancel()
    await _until(lambda: bool(second.sent), limit=TTL + 2)
    await trio.sleep(since + 60.5 - _now())
    assert _events(second) == [
        ("fire", 0, _key(target, "fire", epoch)),
        ("repeat", 4, _key(target, "repeat", epoch, 4)),
        ("repeat", 5, _key(target, "repeat", epoch, 5)),
        ("repeat", 6, _key(target, "repeat", epoch, 6)),
    ]
    assert not third.sent
    second.down(target, down=False)
    await _until(lambda: second.sent[-1].event == "resolve")
    assert second.sent[-1].key == _key(target, "resolve", epoch)
    await trio.sleep(25)
    assert [n.event for n in second.sent].count("repeat") == 3
    assert not third.sent


async def test_a_held_fire_is_sent_once_when_the_hold_ends(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=2, quorum=1, repeat=10.0)
    target = TARGETS[4]
    first, second = _owners(agents, target)
    HOLD[target] = "maintenance"
    try:
        second.down(target)
        await _until(lambda: ("web", target) in first.alerts.firing)
        assert first.alerts.held() == {("web", target): "maintenance"}
        await trio.sleep(30)  # no fire, and no repeats, while held
        assert not any(a.sent for a in agents)
    finally:
        HOLD.pop(target)
    released = trio.current_time()
    await _until(lambda: bool(first.sent))
    assert trio.current_time() - released <= 1.0  # within one tick (the probe interval)
    epoch = first.alerts.firing[("web", target)].epoch
    assert _events(first) == [("fire", 0, _key(target, "fire", epoch))]
    assert first.alerts.held() == {}
    await trio.sleep(10)
    assert [n.event for n in first.sent] == ["fire", "repeat"]  # the schedule goes on
    # Held again: its repeats stop, and it still resolves as usual.
    HOLD[target] = "blocked"
    try:
        await trio.sleep(25)
        assert [n.event for n in first.sent] == ["fire", "repeat"]
        second.down(target, down=False)
        await _until(lambda: first.sent[-1].event == "resolve")
    finally:
        HOLD.pop(target)
    assert first.sent[-1].key == _key(target, "resolve", epoch)
    assert sum(len(a.sent) for a in agents) == 3


async def test_a_fire_resolved_while_held_sends_nothing(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=2, quorum=1, repeat=10.0)
    target = TARGETS[5]
    first, second = _owners(agents, target)
    HOLD[target] = "maintenance"
    try:
        second.down(target)
        await _until(lambda: ("web", target) in first.alerts.firing)
        await trio.sleep(5)
        second.down(target, down=False)
        await _until(lambda: ("web", target) not in first.alerts.firing)
    finally:
        HOLD.pop(target)
    await trio.sleep(30)
    assert not any(a.sent for a in agents)


async def test_a_held_fire_is_released_by_the_new_notifier(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=2, quorum=1)
    target = TARGETS[6]
    first, second = _owners(agents, target)
    HOLD[target] = "maintenance"
    try:
        second.down(target)
        await _until(lambda: ("web", target) in second.alerts.firing)
        first.scope.cancel()  # the notifier dies while the fire is held
        await _until(lambda: second.alerts.firing[("web", target)].notifier == second.alerts.me)
        await trio.sleep(5)
        assert not any(a.sent for a in agents)
    finally:
        HOLD.pop(target)
    await _until(lambda: bool(second.sent), limit=1.5)
    epoch = second.alerts.firing[("web", target)].epoch
    assert _events(second) == [("fire", 0, _key(target, "fire", epoch))]
    assert sum(len(a.sent) for a in agents) == 1
