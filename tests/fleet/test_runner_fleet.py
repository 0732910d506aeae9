"""Runners with a [fleet] table, on one fake etcd gateway, under the MockClock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from trioprobe.alerting.notice import Notice
from trioprobe.config import Config, parse_config
from trioprobe.fleet import agent as agent_module
from trioprobe.fleet._etcd import EtcdClient
from trioprobe.probes import probe_types
from trioprobe.runner import Runner, StartupError

from ..core.fake_probe import FakeProbe
from ..core.test_runner import Recorder
from .fake_etcd import FakeEtcd

TARGETS = [f"t{i}" for i in range(12)]


@pytest.fixture(autouse=True)
def _fake_type() -> Iterator[None]:
    with probe_types.registered("fake", "tests.core.fake_probe"):
        yield


@pytest.fixture
async def fake(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> FakeEtcd:
    etcd = FakeEtcd()
    nursery.start_soon(etcd.run)

    def client(endpoints: Any) -> EtcdClient:
        return EtcdClient(endpoints, client=httpx.AsyncClient(transport=etcd))

    monkeypatch.setattr(agent_module, "EtcdClient", client)
    return etcd


def _config(agent: str, replicas: int = 1) -> Config:
    probe = {"name": "p", "type": "fake", "targets": TARGETS, "interval": 1.0, "timeout": 0.5}
    fleet = {
        "etcd": ["http://etcd.test"],
        "name": "f",
        "agent": agent,
        "replicas": replicas,
        "lease_ttl": 3.0,
    }
    return parse_config({"probe": [probe], "fleet": fleet, "shutdown_grace": 1.0})


def _probed(runner: Runner) -> set[str]:
    probe = runner.probes[0][1]
    assert isinstance(probe, FakeProbe)
    return {t for t, n in probe.sent.items() if n}


async def test_two_runners_share_the_targets_and_label_exports(
    autojump_clock: Any, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    recorders = {name: Recorder() for name in "xy"}
    runners = {n: Runner(_config(n), extra_surfacers=[recorders[n]]) for n in "xy"}
    for runner in runners.values():
        await nursery.start(runner.run)
    await trio.sleep(15)
    x, y = _probed(runners["x"]), _probed(runners["y"])
    assert x | y == set(TARGETS)
    assert x
    assert y
    for name, recorder in recorders.items():
        assert recorder.items
        assert all(em.label("agent") == name for em in recorder.items + recorder.own)
        fleet_metrics = [em for em in recorder.own if em.label("fleet") == "f"]
        assert {m for em in fleet_metrics for m in em.metrics} >= {
            "fleet_connected",
            "fleet_members",
            "fleet_owned_targets",
            "fleet_etcd_writes",
        }
    # The one export so far (at 10 s) holds exactly what each owns: no series for the others'.
    for name in "xy":
        fleet = runners[name].fleet
        assert fleet is not None
        owned = set(fleet.ownership.filter("p", TARGETS))
        assert owned == (x if name == "x" else y)
        exported = {
            em.label("dst") for em in recorders[name].stats() if em.kind.name == "CUMULATIVE"
        }
        assert exported == owned
    # SIGTERM's path: x revokes its lease, y probes everything from then on.
    runners["x"].shutdown()
    await trio.sleep(5)
    probe = runners["y"].probes[0][1]
    assert isinstance(probe, FakeProbe)
    before = dict(probe.sent)
    await trio.sleep(2)
    assert all(probe.sent.get(t, 0) > before.get(t, 0) for t in TARGETS)
    runners["y"].shutdown()


async def test_a_live_name_is_a_startup_error(
    autojump_clock: Any, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    first = Runner(_config("x"))
    await nursery.start(first.run)
    with pytest.raises(StartupError, match="fleet could not start: agent name 'x' is already live"):
        await nursery.start(Runner(_config("x")).run)
    first.shutdown()


def _alerting_config(agent: str, window_end: str, **extra: Any) -> Config:
    probe = {"name": "p", "type": "scripted", "targets": TARGETS, "interval": 1.0, "timeout": 0.5}
    fleet = {
        "etcd": ["http://etcd.test"],
        "name": "f",
        "agent": agent,
        "replicas": 2,
        "lease_ttl": 3.0,
    }
    alert = {"name": "down", "failure_threshold": 2, "repeat_interval": 10.0, "log": False}
    window = {"name": "upgrade", "start": "2020-01-01T00:00Z", "end": window_end, "targets": ["t0"]}
    return parse_config(
        {
            "probe": [probe],
            "fleet": fleet,
            "alert": [alert],
            "maintenance": [window],
            "shutdown_grace": 1.0,
            **extra,
        }
    )


async def test_held_fires_and_repeats_go_out_once_from_the_notifier(
    autojump_clock: Any, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    """The runner's wiring: its maintenance windows hold the fleet's fire, its probe loop
    releases it, and its repeat_interval schedules the repeats; one agent sends them all."""
    from datetime import UTC, datetime

    with probe_types.registered("scripted", "tests.alerting.scripted_probe"):
        from ..alerting import scripted_probe

        scripted_probe.OUTCOMES.clear()
        scripted_probe.OUTCOMES.update({"t0": False, "t1": False})
        end = datetime.fromtimestamp(time.time() + 30, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sent: list[tuple[str, Notice]] = []
        runners = {n: Runner(_alerting_config(n, end)) for n in "xyz"}
        for name, runner in runners.items():
            alert = runner.alerting.alerts["down"]
            alert.notify = lambda notice, name=name: sent.append((name, notice))  # type: ignore[method-assign]
            await nursery.start(runner.run)
        try:
            await trio.sleep(20)
            # t1 fired at once; t0 (in the window) is held: no fire, no repeat.
            assert [n.event for _, n in sent if n.transition.target == "t0"] == []
            assert next(n.event for _, n in sent if n.transition.target == "t1") == "fire"
            await trio.sleep(15)  # the window ended at 30 s
            fires = [(who, n) for who, n in sent if n.event == "fire"]
            assert [n.transition.target for _, n in fires] == ["t1", "t0"]
            await trio.sleep(30)
        finally:
            scripted_probe.OUTCOMES.clear()
            for runner in runners.values():
                runner.shutdown()
    for target in ("t0", "t1"):
        notices = [(who, n) for who, n in sent if n.transition.target == target]
        assert len({who for who, _ in notices}) == 1  # one agent, the notifier, sends them
        events = [(n.event, n.repeat) for _, n in notices]
        assert events[0] == ("fire", 0)
        repeats = [k for event, k in events[1:] if event == "repeat"]
        assert len(repeats) >= 2
        assert repeats == list(range(repeats[0], repeats[0] + len(repeats)))
        assert len({n.key for _, n in notices}) == len(notices)


async def test_the_alerts_api_lists_and_acknowledges_the_fleets_firings(
    autojump_clock: Any, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    """``GET /api/v1/alerts`` on any agent lists the fleet's firing under one id; an ack on
    an agent that does not notify stops the notifier's repeats; 503 while etcd is down."""
    import json

    from ..alerting.test_ack import _call

    with probe_types.registered("scripted", "tests.alerting.scripted_probe"):
        from ..alerting import scripted_probe

        scripted_probe.OUTCOMES.clear()
        scripted_probe.OUTCOMES["t1"] = False
        sent: list[tuple[str, Notice]] = []
        runners: dict[str, Runner] = {}
        for name in "xyz":
            status = {"host": "127.0.0.1", "port": 0}
            config = _alerting_config(name, "2020-01-02T00:00:00Z", status=status)
            runners[name] = runner = Runner(config)
            alert = runner.alerting.alerts["down"]
            alert.notify = lambda notice, name=name: sent.append((name, notice))  # type: ignore[method-assign]
            await nursery.start(runner.run)
        try:
            await trio.sleep(15)
            (notifier,) = {who for who, _ in sent}
            listings = []
            for runner in runners.values():
                assert runner.alerting.api is not None
                status_code, body = await _call(runner.alerting.api, "GET", "/api/v1/alerts")
                assert status_code == 200
                listings.append(json.loads(body))
            (firing,) = listings[0]["firing"]
            assert all(listing == listings[0] for listing in listings)
            assert (firing["target"], firing["notifier"], firing["acknowledged"]) == (
                "t1",
                notifier,
                False,
            )
            assert firing["id"] == next(n.key for _, n in sent if n.event == "fire")
            other = runners[next(n for n in "xyz" if n != notifier)].alerting.api
            assert other is not None
            fake.stop()
            status_code, body = await _call(other, "POST", f"/api/v1/alerts/{firing['id']}/ack")
            assert status_code == 503
            assert b"not acknowledged" in body
            fake.start()
            await trio.sleep(5)
            status_code, _ = await _call(other, "POST", f"/api/v1/alerts/{firing['id']}/ack")
            assert status_code == 200
            assert (await _call(other, "POST", "/api/v1/alerts/nope/ack"))[0] == 404
            await trio.sleep(1)
            count = len(sent)
            await trio.sleep(30)
            assert len(sent) == count  # no repeat from the notifier after the ack
            api = runners[notifier].alerting.api
            assert api is not None
            listed = json.loads((await _call(api, "GET", "/api/v1/alerts"))[1])
            assert listed["firing"][0]["acknowledged"] is True
        finally:
            scripted_probe.OUTCOMES.clear()
            for runner in runners.values():
                runner.shutdown()
