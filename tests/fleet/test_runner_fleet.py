"""Runners with a [fleet] table, on one fake etcd gateway, under the MockClock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

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
