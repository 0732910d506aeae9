"""Alerting inside the runner, under the mock clock: state on every result, metrics through the
surfacers, a target removed while down, log notices, and a clean stop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.core.test_runner import Recorder
from trioprobe import run
from trioprobe.alerting import DOWN, UNKNOWN, UP, Transition
from trioprobe.config import parse_config
from trioprobe.metrics import Int, Kind
from trioprobe.runner import Runner
from trioprobe.surfacers.influx import to_lines
from trioprobe.surfacers.prometheus import render
from trioprobe.testing import assert_no_leaks

from . import scripted_probe


def _config(tmp_path: Path, **alert: Any) -> Any:
    (tmp_path / "targets.txt").write_text("a\nb\n")
    return parse_config(
        {
            "shutdown_grace": 1.0,
            "probe": [
                {
                    "name": "p",
                    "type": "scripted",
                    "targets_file": "targets.txt",
                    "interval": 1.0,
                    "timeout": 0.5,
                    "stats_interval": 2.0,
                    "labels": {"zone": "z"},
                }
            ],
            "alert": [{"name": "p-down", "probes": ["p"], **alert}],
        },
        base_dir=tmp_path,
    )


def _health_metrics(recorder: Recorder, dst: str, kind: Kind) -> Any:
    return [
        em
        for em in recorder.items
        if em.labels.get("alert") == "p-down" and em.label("dst") == dst and em.kind is kind
    ]


async def test_runner_alerting_end_to_end(
    autojump_clock: trio.abc.Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioprobe.alerting")
    async with assert_no_leaks():
        recorder = Recorder()
        runner = Runner(_config(tmp_path), extra_surfacers=[recorder])
        seen: list[Transition] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            with runner.health.subscribe() as transitions:
                await runner.health.wait_until("a", UP)
                await runner.health.wait_until("b", UP)
                scripted_probe.OUTCOMES["b"] = False
                stopped = trio.current_time()
                await runner.health.wait_until("b", DOWN)
                # Three failed probes, one interval apart: down within the threshold.
                assert trio.current_time() - stopped <= 3 * 1.0 + 0.5
                await trio.sleep(2.5)  # one export later
                gauge = _health_metrics(recorder, "b", Kind.GAUGE)[-1]
                assert gauge.metric("health_up") == Int(0)
                assert gauge.metric("alert_firing") == Int(1)
                assert gauge.label("zone") == "z"
                assert gauge.label("probe") == "p"
                a = _health_metrics(recorder, "a", Kind.GAUGE)[-1]
                assert (a.metric("health_up"), a.metric("alert_firing")) == (Int(1), Int(0))
                assert _health_metrics(recorder, "b", Kind.CUMULATIVE)[-1].metric(
                    "health_transitions"
                ) == Int(2)
                # b leaves the target list while down: its alert resolves.
                (tmp_path / "targets.txt").write_text("a\n")
                await runner.health.wait_until("b", UNKNOWN)
                while True:
                    t = transitions.receive_nowait()
                    seen.append(t)
                    if t.reason == "removed":
                        break
            runner.shutdown()
        assert [(t.target, t.old, t.new) for t in seen] == [
            (seen[0].target, UNKNOWN, UP),
            (seen[1].target, UNKNOWN, UP),
            ("b", UP, DOWN),
            ("b", DOWN, UNKNOWN),
        ]
        assert recorder.ended
        # Plain names; each surfacer maps them as it maps every metric.
        prometheus = render(recorder.items)
        assert "# TYPE trioprobe_health_up gauge" in prometheus
        assert "# TYPE trioprobe_health_transitions_total counter" in prometheus
        assert (
            'trioprobe_alert_firing{alert="p-down",dst="b",probe="p",ptype="scripted",zone="z"} 1.0'
            in prometheus
        )
        influx = [line for em in recorder.items for line in to_lines(em)]
        assert any(
            line.startswith(
                "scripted,alert=p-down,dst=b,probe=p,zone=z health_up=0i,alert_firing=1i "
            )
            for line in influx
        )
        messages = [r.getMessage() for r in caplog.records]
        assert any("alert 'p-down' fire" in m and "'b' is down" in m for m in messages), messages
        assert any("alert 'p-down' resolve" in m and "'b' is unknown" in m for m in messages)
        # Everything the runner and its alerting started has ended.


async def test_cancelling_run_leaks_nothing(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    async with assert_no_leaks():
        async with trio.open_nursery() as nursery:
            runner: Runner = await nursery.start(run, _config(tmp_path))
            scripted_probe.OUTCOMES["a"] = False
            transitions = runner.health.subscribe()
            await runner.health.wait_until("a", DOWN)
            nursery.cancel_scope.cancel()
        # The subscription ended with the run (no one waits on it forever).
        with transitions:
            assert DOWN in [t.new async for t in transitions]


async def test_repeat_interval_renotifies_while_firing(
    autojump_clock: trio.abc.Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioprobe.alerting")
    runner = Runner(_config(tmp_path, repeat_interval=10.0))
    scripted_probe.OUTCOMES["a"] = False
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await runner.health.wait_until("a", DOWN)
        await trio.sleep(35)
        runner.shutdown()
    repeats = [r for r in caplog.records if "alert 'p-down' repeat" in r.getMessage()]
    assert len(repeats) == 3
