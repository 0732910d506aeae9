"""A surfacer that stops reading must cost only its own exports: the probes, the other surfacers
and the shutdown go on as if it were not there (docs/architecture.md, the fan-out)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trioprobe.metrics import EventMetrics, Int, Kind
from trioprobe.runner import Runner

from .test_runner import Recorder, _config, _probe
from .test_runner import _fake_type as _fake_type  # the fake probe type's autouse fixture


class Blocked:
    """Takes its channel and never reads it (a hung disk, a stuck network write)."""

    name = "blocked"

    def __init__(self) -> None:
        self.cancelled = False

    async def run(
        self,
        metrics: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled = True


async def test_a_blocked_surfacer_holds_up_nothing_else(autojump_clock: Any) -> None:
    recorder, blocked = Recorder(), Blocked()
    runner = Runner(_config(interval=0.5, stats_interval=0.5), extra_surfacers=[recorder, blocked])
    with trio.fail_after(100_000):  # virtual seconds: a hang guard only
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            assert runner.fanout is not None
            while runner.fanout.dropped["blocked"] == 0:  # noqa: ASYNC110 - virtual time
                await trio.sleep(10)
            # Its buffer is full, and everything else kept going meanwhile...
            sent = dict(_probe(runner).sent)
            exports = len(recorder.stats())
            await trio.sleep(10)
            assert all(_probe(runner).sent[t] >= sent[t] + 19 for t in ("a", "b"))
            assert len(recorder.stats()) > exports
            assert runner.fanout.dropped["recorder"] == 0
            # ...up to the last export, which the recorder gets whole.
            stopped = trio.current_time()
            runner.shutdown()
        took = trio.current_time() - stopped
    # The shutdown waited the blocked surfacer's grace (1 s), then cancelled it.
    assert took == pytest.approx(1.0, abs=0.01)
    assert blocked.cancelled
    assert recorder.ended
    for target in ("a", "b"):
        total = recorder.latest(target, Kind.CUMULATIVE).metric("total")
        assert total == Int(_probe(runner).sent[target])
