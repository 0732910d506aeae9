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


class _Agent:
    def __init__(self, fake: FakeEtcd, name: str, replicas: int, quorum: int = 1) -> None:
        client = EtcdClient(["http://etcd.test"], client=httpx.AsyncClient(transport=fake))
        self.membership = Membership(client, "f", AgentInfo(name), lease_ttl=TTL)
        self.ownership = Ownership(self.membership, replicas)
        self.sent: list[Notice] = []
        self.alerts = FleetAlerts(
            self.membership,
            self.ownership,
            lambda probe: ("web-down", quorum),
            lambda alert, notice: self.sent.append(notice),
        )
        self.scope = trio.CancelScope()
        self.targets = lambda: self.ownership.filter("web", TARGETS)

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.membership.run)
                nursery.start_soon(self.ownership.run)
                nursery.start_soon(self.alerts.run)
                task_status.started()

    def down(self, target: str, down: bool = True) -> None:
        old, new = (UP, DOWN) if down else (DOWN, UP)
        self.alerts.local(Transition("web", target, old, new, 0.0, 3, 3, "boom", "web-down"))


async def _until(pred: Callable[[], bool], limit: float = 30.0) -> None:
    with trio.fail_after(limit):
        while not pred():  # noqa: ASYNC110 - polling state another task changes
            await trio.sleep(0.05)


async def _fleet(
    nursery: trio.Nursery, n: int, replicas: int, quorum: int = 1
) -> tuple[FakeEtcd, list[_Agent]]:
    fake = FakeEtcd()
    nursery.start_soon(fake.run)
    agents = [_Agent(fake, f"agent-{i}", replicas, quorum) for i in range(n)]
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
    owners = agents[0].ownership.owners("web", target)
    by_name = {a.membership.info.name: a for a in agents}
    first, second = (by_name[o] for o in owners)
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
    owners = agents[0].ownership.owners("web", target)
    by_name = {a.membership.info.name: a for a in agents}
    by_name[owners[1]].down(target)
    await _until(lambda: bool(by_name[owners[0]].sent))
    await trio.sleep(2)
    assert sum(len(a.sent) for a in agents) == 1


async def test_a_new_notifier_resends_under_the_same_key(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    _, agents = await _fleet(nursery, 3, replicas=2, quorum=1)
    target = TARGETS[2]
    owners = agents[0].ownership.owners("web", target)
    by_name = {a.membership.info.name: a for a in agents}
    first, second = by_name[owners[0]], by_name[owners[1]]
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
