"""``depends_on`` in a fleet: judged from the fleet's agreed state, not the notifier's own view
(which is empty for a dependency other agents own)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from trioprobe.alerting.health import Health
from trioprobe.alerting.notice import Notice
from trioprobe.alerting.state import DOWN, UP, AlertRule, Transition
from trioprobe.config import Config, parse_config
from trioprobe.fleet.depends import AgreedDependencies
from trioprobe.probes import probe_types
from trioprobe.results import ProbeResult
from trioprobe.runner import Runner

from .fake_etcd import FakeEtcd
from .test_agents import _Agent as _FleetAgent
from .test_agents import _now, _until
from .test_runner_fleet import fake  # noqa: F401 - the fixture

WEB = [f"t{i}" for i in range(12)]


@pytest.fixture(autouse=True)
def _scripted() -> Iterator[None]:
    with probe_types.registered("scripted", "tests.alerting.scripted_probe"):
        from ..alerting import scripted_probe

        scripted_probe.OUTCOMES.clear()
        yield
        scripted_probe.OUTCOMES.clear()


def _config(agent: str, depends_on: str) -> Config:
    def probe(name: str, targets: list[str]) -> dict[str, Any]:
        return {"name": name, "type": "scripted", "targets": targets, "interval": 1.0}

    fleet = {"etcd": ["http://etcd.test"], "name": "f", "agent": agent, "lease_ttl": 3.0}
    common = {"failure_threshold": 2, "log": False}
    alerts = [
        {"name": "gw-down", "probes": ["gw"], **common},
        {"name": "web-down", "probes": ["web"], "depends_on": [depends_on], **common},
    ]
    return parse_config(
        {
            "probe": [probe("gw", ["g0", "g1"]), probe("web", WEB)],
            "fleet": fleet,
            "alert": alerts,
            "shutdown_grace": 1.0,
        }
    )


@pytest.mark.parametrize("depends_on", ["gw", "gw:g0"])
async def test_a_dependency_another_agent_owns_holds_the_dependents_fire(
    autojump_clock: Any,
    nursery: trio.Nursery,
    fake: FakeEtcd,  # noqa: F811 - the fixture
    depends_on: str,
) -> None:
    """3 runners, one replica: g0's owner is not the notifier of the dependent target, which
    holds its fire while the fleet agrees g0 is down, and sends it once g0 is back."""
    from ..alerting import scripted_probe

    sent: list[tuple[str, Notice]] = []
    runners = {n: Runner(_config(n, depends_on)) for n in "xyz"}
    for name, runner in runners.items():
        for alert in runner.alerting.alerts.values():
            alert.notify = lambda notice, name=name: sent.append((name, notice))  # type: ignore[method-assign]
        await nursery.start(runner.run)
    try:
        await trio.sleep(5)
        fleet = runners["x"].fleet
        assert fleet is not None
        (gw_owner,) = fleet.ownership.owners("gw", "g0")
        target = next(t for t in WEB if fleet.ownership.owners("web", t)[0] != gw_owner)
        (notifier,) = fleet.ownership.owners("web", target)
        # The dependency goes down first (a dependent agreed down before it fires: the
        # fleet knows of no outage to blame yet, as without a fleet).
        scripted_probe.OUTCOMES["g0"] = False
        await _until(lambda: all(r.fleet.alerts.agreed_down for r in runners.values()))  # type: ignore[union-attr]
        scripted_probe.OUTCOMES[target] = False
        await trio.sleep(10)
        assert [(who, n.transition.target) for who, n in sent if n.event == "fire"] == [
            (gw_owner, "g0")
        ]
        alerts = runners[notifier].fleet.alerts  # type: ignore[union-attr]
        assert alerts is not None
        assert alerts.held() == {("web", target): "blocked"}
        assert alerts.listing()[1] == [{"probe": "web", "target": target, "held": "blocked"}]
        # The dependency recovers, the dependent is still down: its fire goes out, once.
        scripted_probe.OUTCOMES["g0"] = True
        await trio.sleep(10)
        fires = [(who, n.transition.target) for who, n in sent if n.event == "fire"]
        assert fires == [(gw_owner, "g0"), (notifier, target)]
        assert alerts.held() == {}
    finally:
        for runner in runners.values():
            runner.shutdown()


# --- the quorum rule, on memberships alone ---------------------------------------------------

GATEWAYS = [f"g{i}" for i in range(20)]


class _Agent(_FleetAgent):
    """An agent whose ``gw`` probe is watched with ``quorum = 2`` and whose ``web`` alert
    depends on ``gw``; its own view (``health``) of gw is what the test feeds it."""

    def __init__(self, etcd: FakeEtcd, name: str) -> None:
        self.health = Health()
        super().__init__(
            etcd,
            name,
            2,
            rule=lambda probe: ("gw-down", 2) if probe == "gw" else ("web-down", 1),
            hold=self._hold,
        )
        self.depends = AgreedDependencies(self.alerts, self.health)

    def _hold(self, alert: str, probe: str, target: str) -> str | None:
        if alert != "web-down":
            return None
        return "blocked" if self.depends.first_down([("gw", None)]) is not None else None

    def vote(self, probe: str, target: str, down: bool = True) -> None:
        old, new = (UP, DOWN) if down else (DOWN, UP)
        alert = "gw-down" if probe == "gw" else "web-down"
        self.alerts.local(Transition(probe, target, old, new, _now(), 3, 3, "boom", alert))


async def test_a_dependency_is_down_for_the_hold_only_with_its_quorum(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """One owner of the dependency sees it down (quorum 2): the dependent pages (a flaky vantage
    point holds nobody's pages); both do: held, also by a notifier that owns neither the
    dependency nor sees it itself; released when it is back and the dependent still down."""
    etcd = FakeEtcd()
    nursery.start_soon(etcd.run)
    agents = [_Agent(etcd, f"agent-{i}") for i in range(4)]
    for agent in agents:
        await nursery.start(agent.run)
    await _until(lambda: all(len(a.membership.live()) == 4 for a in agents))
    by_name = {a.membership.info.name: a for a in agents}
    own = agents[0].ownership.owners
    gw = GATEWAYS[0]
    first, second = (by_name[n] for n in own("gw", gw))
    target = next(t for t in WEB if not {*own("web", t)} & {*own("gw", gw)})
    notifier, voter = (by_name[n] for n in own("web", target))

    first.vote("gw", gw)
    voter.vote("web", target)
    await _until(lambda: bool(notifier.sent))
    assert [(n.event, n.transition.target) for n in notifier.sent] == [("fire", target)]
    voter.vote("web", target, down=False)
    await _until(lambda: notifier.sent[-1].event == "resolve")

    second.vote("gw", gw)
    await _until(lambda: all(a.alerts.agreed_down.get("gw") == {gw} for a in agents))
    voter.vote("web", target)
    await _until(lambda: ("web", target) in notifier.alerts.firing)
    await trio.sleep(10)
    assert len(notifier.sent) == 2
    assert notifier.alerts.held() == {("web", target): "blocked"}

    first.vote("gw", gw, down=False)
    released = trio.current_time()
    await _until(lambda: len(notifier.sent) == 3)
    assert trio.current_time() - released <= 1.5  # the next tick after the mirror has it
    assert notifier.sent[-1].event == "fire"
    web = [
        (n.event, n.transition.target)
        for a in agents
        for n in a.sent
        if n.transition.probe == "web"
    ]
    assert web == [("fire", target), ("resolve", target), ("fire", target)]


async def test_the_agents_own_view_counts_at_once_where_one_vote_is_the_quorum(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Without a fleet verdict yet (its vote not mirrored), this agent's own down view of a
    dependency with quorum 1 holds; with quorum 2 it does not."""
    etcd = FakeEtcd()
    nursery.start_soon(etcd.run)
    agent = _Agent(etcd, "solo")
    await nursery.start(agent.run)
    agent.health.rules = {"gw": AlertRule(name="gw-down", failure_threshold=1)}
    agent.health.feed("gw", ProbeResult("g0", False, error="boom"))
    assert agent.depends.first_down([("gw", None)]) is None  # quorum 2: one view is not enough
    agent.alerts.rule_of = lambda probe: ("gw-down", 1)
    assert agent.depends.first_down([("gw", None)]) == ("gw", "g0")
    assert agent.depends.first_down([("gw", "g1")]) is None
