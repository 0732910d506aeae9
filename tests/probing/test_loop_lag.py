"""The runner watches its own event loop: lag samples, export, rate-limited warning."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from trioprobe._looplag import LAG_METRIC, watch_loop_lag
from trioprobe.config import parse_config
from trioprobe.metrics import Distribution, EventMetrics
from trioprobe.runner import Runner

from ..core.test_runner import Recorder


async def test_lag_recorded_exported_and_warned_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    emitted: list[EventMetrics] = []
    samples: list[float] = []
    with caplog.at_level(logging.WARNING, logger="trioprobe.runner"):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: watch_loop_lag(
                    emitted.append,
                    period=0.1,
                    export_interval=1.0,
                    warn_every=60.0,
                    on_lag=samples.append,
                    task_status=task_status,
                )
            )
            await trio.sleep(1.15)  # a quiet second: no lag, no warning
            assert len(emitted) == 1
            assert max(samples) == pytest.approx(0.0)
            for _ in range(3):
                # Halfway between ticks, the loop is held for 80 ms: the clock moves on while
                # nothing runs, as under a blocking call, and the tick 50 ms later is 30 ms late.
                autojump_clock.jump(0.08)
                await trio.sleep(0.42)
            await trio.sleep(2.0)
            nursery.cancel_scope.cancel()
    assert sorted(samples)[-4:] == pytest.approx([0.0, 0.03, 0.03, 0.03], abs=1e-9)
    lag = emitted[-1].metric(LAG_METRIC)
    assert isinstance(lag, Distribution)
    assert lag.count > 30
    assert lag.bucket_counts[lag.lower_bounds.index(0.0256)] == 3  # the 30 ms stalls
    assert emitted[-1].labels == {"ptype": "runner"}
    warnings = [r.getMessage() for r in caplog.records]
    # Two windows had lag p99 > 10 ms, but the warning is rate-limited to one a minute.
    assert len(warnings) == 1
    assert "latencies may be inflated by this process" in warnings[0]


async def test_runner_exports_loop_lag_through_the_surfacers(autojump_clock: Any) -> None:
    config = parse_config(
        {
            "probe": [
                {
                    "name": "w",
                    "type": "http",
                    "targets": ["http://127.0.0.1:9/"],
                    "interval": 5.0,
                    "stats_interval": 5.0,
                }
            ]
        }
    )
    recorder = Recorder()
    lags: list[float] = []
    runner = Runner(config, extra_surfacers=[recorder], on_loop_lag=lags.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(5.5)
        runner.shutdown()
    # The runner's own metrics (ptype="runner"): the loop lag's, beside the targets layer's.
    own = [em for em in recorder.own if LAG_METRIC in em.metrics]
    assert own
    assert isinstance(own[-1].metric(LAG_METRIC), Distribution)
    assert len(lags) >= 50  # every 100 ms
