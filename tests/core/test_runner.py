"""The runner with a fake probe type and a recording surfacer, under a mock clock."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioprobe
from trioprobe._ticks import spread_offset
from trioprobe.config import Config, ConfigError, parse_config
from trioprobe.metrics import EventMetrics, Int, Kind
from trioprobe.probes import ScheduledProbe, probe_types
from trioprobe.results import ProbeResult
from trioprobe.runner import Runner
from trioprobe.testing import assert_no_leaks

from .fake_probe import FakeProbe


@pytest.fixture(autouse=True)
def _fake_type() -> Iterator[None]:
    with probe_types.registered("fake", "tests.core.fake_probe"):
        yield


class Recorder:
    """A surfacer that keeps the probes' metrics it receives and notes when its stream ended.

    The runner's own metrics (event-loop lag, ``ptype="runner"``) go to ``own``.
    """

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.items: list[EventMetrics] = []
        self.own: list[EventMetrics] = []
        self.ended = False

    async def run(
        self,
        metrics: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with metrics:
            task_status.started()
            async for em in metrics:
                (self.own if em.labels.get("ptype") == "runner" else self.items).append(em)
        self.ended = True

    def stats(self) -> list[EventMetrics]:
        """The stats keepers' exports (not the alerting service's health metrics)."""
        return [em for em in self.items if "alert" not in em.labels]

    def latest(self, dst: str, kind: Kind = Kind.CUMULATIVE) -> EventMetrics:
        return [em for em in self.stats() if em.label("dst") == dst and em.kind is kind][-1]


def _config(**probe: Any) -> Config:
    table = {
        "name": "fake1",
        "type": "fake",
        "targets": ["a", "b"],
        "interval": 1.0,
        "timeout": 0.5,
        "stats_interval": 2.0,
        **probe,
    }
    return parse_config({"probe": [table], "shutdown_grace": 1.0})


def _probe(runner: Runner) -> FakeProbe:
    probe = runner.probes[0][1]
    assert isinstance(probe, FakeProbe)
    return probe


async def test_results_reach_surfacer(autojump_clock: Any) -> None:
    recorder = Recorder()
    runner = Runner(_config(labels={"zone": "z"}), extra_surfacers=[recorder])
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(4.5)  # exports at 2 and 4
        nursery.cancel_scope.cancel()
    counters = [em for em in recorder.stats() if em.kind is Kind.CUMULATIVE]
    assert sorted(em.label("dst") for em in counters) == ["a", "a", "b", "b"]
    # Beside each, the target's last result as the gauge `up`.
    assert recorder.latest("a", Kind.GAUGE).metric("up") == Int(1)
    latest = recorder.latest("a")
    assert latest.label("ptype") == "fake"
    assert latest.label("probe") == "fake1"
    assert latest.label("zone") == "z"
    # a's first probe is at its spread offset (0.91), then every second: 4 probes by t=4.
    assert spread_offset("a", 1.0) == pytest.approx(0.909, abs=1e-3)
    assert latest.metric("total") == Int(4)
    assert latest.metric("success") == Int(4)


async def test_shutdown_drains_and_returns(autojump_clock: Any) -> None:
    recorder = Recorder()
    observed: list[tuple[str, ProbeResult]] = []
    runner = Runner(
        _config(stats_interval=10.0),
        on_result=lambda name, r: observed.append((name, r)),
        extra_surfacers=[recorder],
    )
    async with assert_no_leaks(), trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(3.5)
        assert recorder.items == []  # no tick yet
        runner.shutdown()
        # run() ends by itself: nothing here cancels the nursery.
    assert recorder.ended
    probe = _probe(runner)
    # First probes at the spread offsets (a 0.91, b 0.44), then every second, until 3.5.
    assert probe.sent == {"a": 3, "b": 4}
    # The final export carries every result.
    for dst in ("a", "b"):
        assert recorder.latest(dst).metric("total") == Int(probe.sent[dst])
    assert len(observed) == 7
    assert {name for name, _ in observed} == {"fake1"}
    assert sorted(r.target for _, r in observed) == ["a", "a", "a", "b", "b", "b", "b"]
    assert runner.fanout is not None
    assert runner.fanout.dropped == {"recorder": 0}


async def test_cancel_outer_scope_returns_promptly(autojump_clock: Any) -> None:
    runner = Runner(_config(), extra_surfacers=[Recorder()])
    async with assert_no_leaks():
        start = trio.current_time()
        with trio.move_on_after(3.0):
            await runner.run()
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_probe_error_propagates(autojump_clock: Any) -> None:
    recorder = Recorder()
    runner = Runner(_config(fail_at=2.5), extra_surfacers=[recorder])
    async with assert_no_leaks():
        # Itself, not in the groups of the nurseries it crossed.
        with pytest.raises(RuntimeError, match="failed on purpose"):
            await runner.run()


async def test_targets_file_changes_reach_probes(tmp_path: Path, autojump_clock: Any) -> None:
    path = tmp_path / "targets.txt"
    path.write_text("a\n")
    config = parse_config(
        {
            "probe": [
                {
                    "name": "p",
                    "type": "fake",
                    "targets_file": "targets.txt",
                    "interval": 1.0,
                    "stats_interval": 2.0,
                }
            ]
        },
        base_dir=tmp_path,
    )
    recorder = Recorder()
    runner = Runner(config, extra_surfacers=[recorder])
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(2.5)
        targets = runner.probes[0][2]
        generation = targets.snapshot.generation
        path.write_text("a\nb\n")
        # The file is read in a worker thread, which the mock clock does not wait for: wait
        # for the new snapshot, not for a number of (virtual) seconds.
        await targets.wait_changed(generation)
        await trio.sleep(3.0)
        runner.shutdown()
    assert {em.label("dst") for em in recorder.items} == {"a", "b"}
    assert _probe(runner).sent["b"] >= 1


def test_missing_targets_file_is_config_error(tmp_path: Path) -> None:
    config = parse_config(
        {"probe": [{"name": "p", "type": "fake", "targets_file": "nope.txt"}]},
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match=r"probe 'p': cannot read targets file .*nope\.txt"):
        Runner(config)


async def test_shutdown_before_start(autojump_clock: Any) -> None:
    # A signal can arrive while the runner is still starting: that must not be an error.
    recorder = Recorder()
    runner = Runner(_config(), extra_surfacers=[recorder])
    runner.shutdown()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
    assert recorder.ended
    assert recorder.items == []


# --- the runner's boundary: errors a caller can catch (see also tests/test_boundaries.py) ------


class FailingSurfacer:
    """A surfacer that cannot start (``at_start``) or fails once ``go`` is set."""

    def __init__(self, name: str, *, at_start: bool = False, go: trio.Event | None = None) -> None:
        self.name = name
        self.at_start = at_start
        self.go = go

    async def run(
        self,
        metrics: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # `with`, not `async with`: aclose()'s checkpoint in a cancelled scope would replace
        # the error with Cancelled, and the second surfacer's failure would be lost.
        with metrics:
            if self.at_start:
                raise OSError(98, "Address already in use", "127.0.0.1:9313")
            task_status.started()
            if self.go is not None:
                await self.go.wait()
                raise OSError(5, f"{self.name} failed")
            async for _ in metrics:
                pass


async def test_startup_error_is_raised_as_itself(autojump_clock: Any) -> None:
    runner = Runner(_config(), extra_surfacers=[FailingSurfacer("bad", at_start=True)])
    async with assert_no_leaks():
        with pytest.raises(trioprobe.StartupError, match="surfacer 'bad' could not start"):
            await runner.run()


async def test_run_raises_startup_error_as_itself(autojump_clock: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = parse_config(
            {
                "probe": [{"name": "fake1", "type": "fake", "targets": ["a"], "interval": 1.0}],
                "surfacer": [{"type": "prometheus", "port": port}],
            }
        )
        with pytest.raises(trioprobe.StartupError, match=f"127.0.0.1:{port}"):
            await trioprobe.run(config)


async def test_callers_observer_error_comes_back_as_itself(autojump_clock: Any) -> None:
    def observe(name: str, result: ProbeResult) -> None:
        raise ValueError("the caller's observer")

    runner = Runner(_config(), on_result=observe, extra_surfacers=[Recorder()])
    with pytest.raises(ValueError, match="the caller's observer"):
        await runner.run()


async def test_two_parts_failing_at_once_are_a_group(autojump_clock: Any) -> None:
    go = trio.Event()
    surfacers = [FailingSurfacer("x", go=go), FailingSurfacer("y", go=go)]
    # The first result releases both surfacers in the same step: both fail, neither is hidden.
    runner = Runner(_config(), on_result=lambda name, result: go.set(), extra_surfacers=surfacers)
    with pytest.RaisesGroup(
        pytest.RaisesExc(OSError, match="x failed"), pytest.RaisesExc(OSError, match="y failed")
    ):
        await runner.run()


async def test_observe_is_the_deprecated_spelling_of_on_result(autojump_clock: Any) -> None:
    seen: list[str] = []
    with pytest.warns(DeprecationWarning, match=r"observe= is deprecated, use on_result="):
        runner = Runner(_config(), observe=lambda name, result: seen.append(name))
    assert runner.observe is not None
    runner.observe("p", ProbeResult("a", True))
    assert seen == ["p"]
    with pytest.raises(TypeError, match="give on_result= only"):
        Runner(_config(), observe=print, on_result=print)


async def test_the_runners_own_metrics_under_one_label_set_are_one_series(
    autojump_clock: Any,
) -> None:
    # The reloads', the loop lag's and the collector governor's metrics are all labelled just
    # ptype="runner": a surfacer keeps the latest EventMetrics per (kind, labels), so they must
    # arrive as one, or each export would hide the others (seen: the reload counter vanished).
    config = parse_config(
        {"probe": [{"name": "w", "type": "http", "targets": ["http://127.0.0.1:9/"]}]}
    )
    recorder = Recorder()
    runner = Runner(config, extra_surfacers=[recorder], freeze_gc=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(25.0)
        runner.shutdown()
    plain = [em for em in recorder.own if dict(em.labels) == {"ptype": "runner"}]
    cumulative = [em for em in plain if em.kind is Kind.CUMULATIVE]
    assert cumulative
    names = set(cumulative[-1].metrics)
    assert {"config_reloads", "event_loop_lag_seconds", "gc_reclaims"} <= names
    assert len({(em.kind, em.timestamp) for em in plain}) == len(plain)  # one per kind a tick


def test_a_probes_tick_slot_reaches_its_schedule() -> None:
    table = {"name": "h", "type": "http", "targets": ["http://127.0.0.1:9/"], "tick_slot": "10ms"}
    probe = Runner(parse_config({"probe": [table]})).probes[0][1]
    assert isinstance(probe, ScheduledProbe)
    assert probe.tick_slot == pytest.approx(0.01)
