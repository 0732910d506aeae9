"""The stats keeper: the one task that owns a probe's per-target accumulators.

Probes never touch metrics state; they send :class:`~trioprobe.ProbeResult` values over a memory
channel, and this task folds them into one cumulative :class:`~trioprobe.metrics.EventMetrics` per
target. Owning the state in a single task is what makes it lock-free (cloudprober's design).

Every ``interval`` the keeper asks ``targets()`` for the current targets and exports a labelled
clone of each target's accumulator. Exports go through a private exporter task: the keeper only
clones (a synchronous, bounded amount of work) and hands the batch over, so a slow consumer delays
exports rather than the probes. Only if the exporter is a whole tick behind does the hand-over
wait, which is the back-pressure the export channel is meant to apply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import trio

from ._groups import open_nursery
from ._ticks import next_tick_after
from .metrics import Distribution, EventMetrics, Int, Kind, MetricsError
from .results import ProbeResult

__all__ = ["stats_keeper"]

logger = logging.getLogger("trioprobe.stats")

# Results are folded in batches: receive_nowait() avoids a scheduler round trip per result.
_MAX_BATCH = 4096
# While cloning many targets, let probes run now and then so a large export does not stall them.
_CLONES_PER_CHECKPOINT = 1000


async def stats_keeper(
    results: trio.MemoryReceiveChannel[ProbeResult],
    export: trio.MemorySendChannel[EventMetrics],
    *,
    probe_type: str,
    probe_name: str,
    targets: Callable[[], Iterable[str]],
    interval: float,
    extra_labels: Mapping[str, str] | None = None,
    latency_unit: float = 1.0,
    latency_distribution: Distribution | None = None,
    observe: Callable[[ProbeResult], None] | None = None,
    export_up: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accumulate ``results`` per target and export them every ``interval`` seconds.

    Semantics (cloudprober's): a target's first result seeds its accumulator; each tick calls
    ``targets()`` afresh and sends a clone of each listed target's accumulator, labelled ``ptype``,
    ``probe``, ``dst`` plus ``extra_labels``; a listed target with no results exports nothing;
    accumulators of removed targets are kept (their counters resume if the target returns).
    Beside it goes a GAUGE ``EventMetrics`` with the target's ``gauges`` and, if ``export_up``
    (the runner sets it), ``up``: 1 if its last result succeeded, else 0 (what an alert on a
    target being down wants, with no ``rate()`` over the counters).

    When ``results`` is closed (all probes have stopped), the keeper makes one final export, then
    closes ``export`` and returns: it owns that channel end, so pass it a clone.

    ``observe``, if given, sees every result as it is folded in (the CLI's live view uses it).
    """
    if interval <= 0:
        raise ValueError(f"stats interval must be > 0, got {interval}")
    # Extra labels come after ptype/probe/dst and cannot override them (cloudprober's order).
    extra = dict(extra_labels or {})
    cumulative: dict[str, EventMetrics] = {}
    gauges: dict[str, EventMetrics] = {}
    # Each target's `up` value, the same Int its gauge accumulator holds: a result sets it in
    # place, so exporting it costs nothing beyond the clone.
    up: dict[str, Int] = {}

    def fold(result: ProbeResult) -> None:
        if observe is not None:
            observe(result)
        acc = cumulative.get(result.target)
        if acc is None:
            cumulative[result.target] = result.metrics(
                latency_unit=latency_unit, latency_distribution=latency_distribution
            )
        else:
            try:
                result.accumulate(
                    acc, latency_unit=latency_unit, latency_distribution=latency_distribution
                )
            except MetricsError as exc:
                # One malformed result (an extra whose type changed) must not end the keeper
                # and with it the whole run; cloudprober logs it and goes on. update() leaves
                # the accumulator untouched on error, so it stays consistent.
                logger.warning(
                    "probe %r: result for %r not added to its metrics: %s",
                    probe_name,
                    result.target,
                    exc,
                )
        gauge = result.gauge_metrics()
        if gauge is not None:
            acc = gauges.get(result.target)
            if acc is None:
                gauges[result.target] = gauge
            else:
                acc.update(gauge)
        if export_up:
            cell = up.get(result.target)
            if cell is None:
                cell = up[result.target] = Int()
                acc = gauges.get(result.target)
                if acc is None:
                    acc = gauges[result.target] = EventMetrics(Kind.GAUGE, result.timestamp)
                acc.add_metric("up", cell)
            cell.value = 1 if result.success else 0

    async def snapshot(timestamp: float) -> list[EventMetrics]:
        batch: list[EventMetrics] = []
        for target in targets():
            for accumulators in (cumulative, gauges):
                acc = accumulators.get(target)
                if acc is None:
                    continue
                # Labels are fixed at the first export (add_label keeps the first value), so an
                # accumulator that has its dst label needs no more: skip that work on every tick.
                if "dst" not in acc.labels:
                    acc.add_label("ptype", probe_type).add_label("probe", probe_name)
                    acc.add_label("dst", target)
                    for key, value in extra.items():
                        acc.add_label(key, value)
                acc.timestamp = timestamp
                batch.append(acc.clone())
                if len(batch) % _CLONES_PER_CHECKPOINT == 0:
                    await trio.lowlevel.checkpoint()
        return batch

    async def exporter(batches: trio.MemoryReceiveChannel[list[EventMetrics]]) -> None:
        async with export, batches:
            async for batch in batches:
                for em in batch:
                    await export.send(em)

    handoff_send, handoff_receive = trio.open_memory_channel[list[EventMetrics]](1)
    async with open_nursery() as nursery:
        nursery.start_soon(exporter, handoff_receive)
        async with handoff_send, results:
            task_status.started()
            next_tick = trio.current_time() + interval
            while True:
                closed = False
                with trio.move_on_at(next_tick):
                    try:
                        fold(await results.receive())
                        for _ in range(_MAX_BATCH):
                            fold(results.receive_nowait())
                    except trio.WouldBlock:
                        pass
                    except trio.EndOfChannel:
                        closed = True
                if closed:
                    await handoff_send.send(await snapshot(time.time()))
                    return
                if trio.current_time() >= next_tick:
                    next_tick = next_tick_after(next_tick, interval, trio.current_time())
                    await handoff_send.send(await snapshot(time.time()))
