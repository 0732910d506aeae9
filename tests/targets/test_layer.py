"""The layer in a run: one snapshot read by scheduler, keeper and alerting; discovery labels
exported with the clash rules of `labels`; the fleet's filter seam; the error counter."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe.config import parse_config
from trioprobe.probes import probe_types
from trioprobe.runner import Runner
from trioprobe.targets import ProbeTargets, Snapshot, StaticSource, Target

from ..core.test_runner import Recorder


@pytest.fixture(autouse=True)
def _fake_type() -> Iterator[None]:
    with probe_types.registered("fake", "tests.core.fake_probe"):
        yield


def _config(tmp_path: Path, **probe: Any) -> Any:
    table = {"name": "p", "type": "fake", "interval": 1.0, "timeout": 0.5, "stats_interval": 2.0}
    return parse_config({"probe": [{**table, **probe}], "shutdown_grace": 1.0}, base_dir=tmp_path)


async def test_discovery_labels_are_exported_and_config_labels_win(
    tmp_path: Path, autojump_clock: Any
) -> None:
    (tmp_path / "sd.json").write_text(
        json.dumps(
            [
                {"targets": ["a"], "labels": {"zone": "z1", "team": "disc", "probe": "spoof"}},
                {"targets": ["b"], "labels": {"__meta_x": "hidden"}},
            ]
        )
    )
    recorder = Recorder()
    runner = Runner(
        _config(tmp_path, file_sd="sd.json", labels={"team": "cfg"}), extra_surfacers=[recorder]
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(5)
        runner.shutdown()
    a = recorder.latest("a")
    assert dict(a.labels) == {
        "ptype": "fake",
        "probe": "p",
        "dst": "a",
        "team": "cfg",
        "zone": "z1",
    }
    assert dict(recorder.latest("b").labels) == {
        "ptype": "fake",
        "probe": "p",
        "dst": "b",
        "team": "cfg",
    }
    # Alerting's metrics of the same target carry the same labels (one snapshot, one rule).
    health = [em for em in recorder.items if "alert" in em.labels and em.label("dst") == "a"]
    assert health
    assert all(em.label("zone") == "z1" and em.label("team") == "cfg" for em in health)
    own = [em for em in recorder.own if "targets_source_errors" in em.metrics]
    assert {(em.label("probe"), em.label("source")) for em in own} == {("p", "file_sd")}


async def test_labels_that_change_relabel_the_series(tmp_path: Path, autojump_clock: Any) -> None:
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["a"], "labels": {"zone": "z1"}}]))
    recorder = Recorder()
    runner = Runner(_config(tmp_path, file_sd="sd.json"), extra_surfacers=[recorder])
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(3)
        targets = runner.probes[0][2]
        generation = targets.snapshot.generation
        sd.write_text(json.dumps([{"targets": ["a"], "labels": {"zone": "z2"}}]))
        await targets.wait_changed(generation)
        await trio.sleep(3)
        runner.shutdown()
    zones = [em.label("zone") for em in recorder.stats() if em.label("dst") == "a"]
    assert zones[0] == "z1"
    assert zones[-1] == "z2"


def _keep_odd(probe: str, targets: tuple[Target, ...]) -> Iterable[Target]:
    return [t for t in targets if int(t.address[1:]) % 2]


async def test_filter_seam_every_reader_sees_the_filtered_snapshot(autojump_clock: Any) -> None:
    recorder = Recorder()
    config = parse_config(
        {
            "probe": [
                {
                    "name": "p",
                    "type": "fake",
                    "targets": [f"t{i}" for i in range(6)],
                    "interval": 1.0,
                    "stats_interval": 2.0,
                }
            ],
            "shutdown_grace": 1.0,
        }
    )
    runner = Runner(config, extra_surfacers=[recorder], target_filter=_keep_odd)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(3)
        probe = runner.probes[0][1]
        assert set(probe.sent) == {"t1", "t3", "t5"}  # type: ignore[attr-defined]
        runner.target_filter = None
        for _, _, targets in runner.probes:
            targets.set_filter(None)
        await trio.sleep(3)
        runner.shutdown()
    assert set(probe.sent) == {f"t{i}" for i in range(6)}  # type: ignore[attr-defined]
    assert {em.label("dst") for em in recorder.stats()} == {f"t{i}" for i in range(6)}


def test_snapshot_is_immutable_and_generations_grow() -> None:
    targets = ProbeTargets("p", [StaticSource(["a", "b", "a"])])
    targets.preload()
    snapshot = targets.snapshot
    assert snapshot.addresses == ("a", "b")
    assert snapshot.generation == 1
    with pytest.raises(AttributeError):
        snapshot.targets = ()  # type: ignore[misc]
    targets.set_filter(lambda probe, ts: [t for t in ts if t.address == "a"])
    assert targets() == ("a",)
    assert targets.snapshot.generation == 2
    assert snapshot.addresses == ("a", "b")  # the old one is unchanged
    assert Snapshot.of(["x"]).labels_of("x") == {}
