"""The stats keeper: the one task that owns a probe's per-target accumulators.

Probes never touch metrics state; they send :class:`~trioprobe.ProbeResult` values over a memory
channel, and this task folds them into one cumulative :class:`~trioprobe.metrics.EventMetrics` per
target. Owning the state in a single task is what makes it lock-free (cloudprober's design).

Every ``interval`` the keeper asks ``targets()`` for the current targets and exports a labelled
clone of each target's accumulator. Exports go through a private exporter task: the keeper only
clones and hands the batch over, so a slow consumer delays exports rather than the probes. Only if
the exporter is a whole tick behind does the hand-over wait, which is the back-pressure the export
channel is meant to apply.

No step of the keeper does work proportional to the number of targets (issue 19): it folds at
most ``_FOLDS_PER_STEP`` results and clones the accumulators of at most ``_TARGETS_PER_STEP``
targets per event-loop step, and while an export is being cloned it keeps folding the results
that arrive between its slices, so probes never wait on a large export. Each target's clone is
taken in one step, so every target still exports one consistent state per tick (a target cloned
late in the tick may include a few results that arrived after the tick began, as a scrape-time
read does).
tests/core/test_step_work_guard.py counts the calls of each step to hold this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import attrs
import trio

from ._deprecated import renamed_keyword
from ._groups import open_nursery
from ._ticks import Ticker
from .failures import Failure
from .metrics import Distribution, EventMetrics, Int, Kind, MetricsError, String
from .results import ProbeResult

__all__ = ["StatsKeeper", "stats_keeper"]

logger = logging.getLogger("trioprobe.stats")

# Results are folded in batches (receive_nowait() saves a scheduler round trip per result), but
# small ones: a fold is 30-60 function calls, so a step of 8 stays far under a millisecond while
# a burst still costs one round trip per 8 results. (4,096 made one step of 145,000 calls at
# 2,000 targets.)
_FOLDS_PER_STEP = 8
# Targets cloned per step of an export (a target's counters and gauges: 40-80 calls).
_TARGETS_PER_STEP = 8


def _check_interval(_: object, __: object, interval: float) -> None:
    if interval <= 0:
        raise ValueError(f"stats interval must be > 0, got {interval}")


def _copy_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    # A copy: a caller's later change to its mapping must not relabel exports half way.
    return dict(labels or {})


@attrs.define(kw_only=True, eq=False)
class StatsKeeper:
    """Accumulates a probe's results per target and exports them every ``interval`` seconds.

    Semantics (cloudprober's): a target's first result seeds its accumulator; each tick calls
    ``targets()`` afresh and sends a clone of each listed target's accumulator, labelled ``ptype``,
    ``probe``, ``dst`` plus ``extra_labels``; a listed target with no results exports nothing;
    accumulators of removed targets are kept (their counters resume if the target returns).
    Beside it goes a GAUGE ``EventMetrics`` with the target's ``gauges`` and, if ``export_up``
    (the runner sets it), ``up``: 1 if its last result succeeded, else 0 (what an alert on a
    target being down wants, with no ``rate()`` over the counters).

    :meth:`run` is the task that does this; :meth:`fold` and :meth:`snapshot` are its two steps,
    usable on their own (all three from one task: the keeper's state is unlocked by design).
    """

    probe_type: str
    probe_name: str
    #: Called every tick: the targets to export.
    targets: Callable[[], Iterable[str]]
    interval: float = attrs.field(validator=_check_interval)
    #: Extra labels come after ptype/probe/dst and cannot override them (cloudprober's order).
    extra_labels: Mapping[str, str] = attrs.field(default=None, converter=_copy_labels)
    #: Seconds per unit of the exported latency (seconds by default).
    latency_unit: float = 1.0
    #: If given, latency is this distribution (cloned per target) instead of a sum.
    latency_distribution: Distribution | None = None
    #: If given, sees every result as it is folded in (the CLI's live view and alerting use it).
    observe: Callable[[ProbeResult], None] | None = None
    export_up: bool = False
    #: A target's discovery labels (``ProbeTargets.labels_of``): exported after
    #: ``extra_labels``, which win a clash, as ptype/probe/dst win over both.
    labels_of: Callable[[str], Mapping[str, str]] | None = None
    _cumulative: dict[str, EventMetrics] = attrs.field(factory=dict, init=False)
    _gauges: dict[str, EventMetrics] = attrs.field(factory=dict, init=False)
    # Each target's `up` value, the same Int its gauge accumulator holds: a result sets it in
    # place, so exporting it costs nothing beyond the clone.
    _up: dict[str, Int] = attrs.field(factory=dict, init=False)
    # The discovery labels each target's accumulators carry, to relabel them when they change.
    _discovered: dict[str, Mapping[str, str]] = attrs.field(factory=dict, init=False)

    def fold(self, result: ProbeResult) -> None:
        """Add ``result`` to its target's accumulators (the first result of a target seeds them).

        A result that does not fit its accumulator (an extra whose type changed) is logged and
        left out whole: one malformed result must not end the keeper, and with it the run.
        """
        if self.observe is not None:
            self.observe(result)
        target = result.target
        acc = self._cumulative.get(target)
        if acc is None:
            self._cumulative[target] = result.metrics(
                latency_unit=self.latency_unit, latency_distribution=self.latency_distribution
            )
        else:
            try:
                result.accumulate(
                    acc,
                    latency_unit=self.latency_unit,
                    latency_distribution=self.latency_distribution,
                )
            except MetricsError as exc:
                # cloudprober logs it and goes on; accumulate() leaves the accumulator untouched
                # on error, so it stays consistent.
                logger.warning(
                    "probe %r: result for %r not added to its metrics: %s",
                    self.probe_name,
                    target,
                    exc,
                )
        if result.gauges:
            self._fold_gauges(result)
        if self.export_up:
            self._set_up(result)
        if result.failure is not None:
            self._note_failure(result, result.failure)

    def _fold_gauges(self, result: ProbeResult) -> None:
        gauge = result.gauge_metrics()
        if gauge is None:
            return
        acc = self._gauges.get(result.target)
        if acc is None:
            self._gauges[result.target] = gauge
        else:
            acc.update(gauge)

    def _note_failure(self, result: ProbeResult, failure: Failure) -> None:
        # The last failure's reason and phase as text gauges: InfluxDB's string fields (one per
        # point, so a dashboard shows why the target last failed). Prometheus has
        # failures_total{reason, phase} instead (see surfacers._naming.INFLUX_ONLY).
        acc = self._gauges.get(result.target)
        if acc is None:
            acc = self._gauges[result.target] = EventMetrics(Kind.GAUGE, result.timestamp)
        for name, text in (
            ("last_failure_reason", failure.reason.value),
            ("last_failure_phase", failure.phase.value),
        ):
            cell = acc.metric(name)
            if isinstance(cell, String):
                cell.value = text
            else:
                acc.add_metric(name, String(text))

    def _set_up(self, result: ProbeResult) -> None:
        cell = self._up.get(result.target)
        if cell is None:
            cell = self._up[result.target] = Int()
            acc = self._gauges.get(result.target)
            if acc is None:
                acc = self._gauges[result.target] = EventMetrics(Kind.GAUGE, result.timestamp)
            acc.add_metric("up", cell)
        cell.value = 1 if result.success else 0

    async def snapshot(
        self,
        timestamp: float,
        *,
        pending: trio.MemoryReceiveChannel[ProbeResult] | None = None,
    ) -> list[EventMetrics]:
        """Labelled clones of the listed targets' accumulators, stamped ``timestamp``.

        It clones the accumulators of ``_TARGETS_PER_STEP`` targets per event-loop step.
        Between those slices it folds up to ``_FOLDS_PER_STEP`` results waiting in ``pending``
        (the keeper's own input), so results keep flowing during a long export instead of
        queueing up to the probes; each target's clone is still taken whole, in one step.
        """
        batch: list[EventMetrics] = []
        labels_of = self.labels_of
        cloned = 0
        for target in self.targets():
            if labels_of is not None:
                discovered = labels_of(target)
                if discovered != self._discovered.get(target, {}):
                    self._discovered[target] = discovered
                    self._unlabel(target)
            labelled = None
            for accumulators in (self._cumulative, self._gauges):
                acc = accumulators.get(target)
                if acc is None:
                    continue
                # Labels are fixed at the first export (add_label keeps the first value), so an
                # accumulator that has its dst label needs no more: skip that work on every tick.
                # A target's two accumulators share one label dict (memory per target).
                if "dst" not in acc.labels:
                    if labelled is None:
                        self._label(acc, target)
                    else:
                        acc.share_labels(labelled)
                labelled = acc
                acc.timestamp = timestamp
                batch.append(acc.clone())
            cloned += 1
            if cloned % _TARGETS_PER_STEP == 0:
                await trio.lowlevel.checkpoint()
                if pending is not None:
                    self._fold_waiting(pending)
                    await trio.lowlevel.checkpoint()
        return batch

    def _fold_waiting(self, results: trio.MemoryReceiveChannel[ProbeResult]) -> None:
        """Fold up to ``_FOLDS_PER_STEP`` results that are already waiting (never blocks;
        the end of the channel is left for the keeper's main loop to see)."""
        fold = self.fold
        try:
            for _ in range(_FOLDS_PER_STEP):
                fold(results.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            pass

    def adopt(self, previous: StatsKeeper) -> bool:
        """Continue ``previous``'s accumulators (a probe restarted by a reload), so counters
        show no reset; only when both measure the same way (type, latency buckets and unit).
        Labels are rebuilt at the next export, since the probe's labels may have changed."""
        same = (
            previous.probe_type == self.probe_type
            and previous.latency_unit == self.latency_unit
            and previous.latency_distribution == self.latency_distribution
        )
        if not same:
            return False
        self._cumulative, self._gauges, self._up = (
            previous._cumulative,
            previous._gauges,
            previous._up,
        )
        for accumulators in (self._cumulative, self._gauges):
            for acc in accumulators.values():
                acc.set_labels({})
        return True

    def _unlabel(self, target: str) -> None:
        # The next export labels them afresh (see snapshot): a change of discovery labels.
        for accumulators in (self._cumulative, self._gauges):
            acc = accumulators.get(target)
            if acc is not None:
                acc.set_labels({})

    def _label(self, acc: EventMetrics, target: str) -> None:
        acc.add_label("ptype", self.probe_type).add_label("probe", self.probe_name)
        acc.add_label("dst", target)
        for key, value in self.extra_labels.items():
            acc.add_label(key, value)
        for key, value in self._discovered.get(target, {}).items():
            acc.add_label(key, value)

    async def run(
        self,
        results: trio.MemoryReceiveChannel[ProbeResult],
        export: trio.MemorySendChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Fold ``results`` and send a snapshot to ``export`` every ``interval`` seconds.

        The sends are a private exporter task's (see the module doc), so a slow consumer delays
        exports rather than the probes. When ``results`` is closed (all probes have stopped),
        the keeper makes one final export, then closes ``export`` and returns: it owns that
        channel end, so pass it a clone.
        """
        batches_send, batches_receive = trio.open_memory_channel[list[EventMetrics]](1)
        async with open_nursery() as nursery:
            nursery.start_soon(_send_batches, batches_receive, export)
            async with batches_send, results:
                task_status.started()
                await self._fold_and_tick(results, batches_send)

    async def _fold_and_tick(
        self,
        results: trio.MemoryReceiveChannel[ProbeResult],
        batches: trio.MemorySendChannel[list[EventMetrics]],
    ) -> None:
        fold = self.fold  # looked up once: this loop runs for every result
        ticker = Ticker(self.interval)
        while True:
            closed = False
            with trio.move_on_at(ticker.due):
                try:
                    fold(await results.receive())
                    for _ in range(_FOLDS_PER_STEP - 1):
                        fold(results.receive_nowait())
                except trio.WouldBlock:
                    pass
                except trio.EndOfChannel:
                    closed = True
            if closed:
                await batches.send(await self.snapshot(time.time()))
                return
            if ticker.poll() is not None:
                # A step of its own for the first slice: folding a batch and cloning one in the
                # same step made it twice as long whenever a tick came right after a batch
                # (1,022 calls against the step guard's 1,000, only on a busy machine).
                await trio.lowlevel.checkpoint()
                await batches.send(await self.snapshot(time.time(), pending=results))


async def _send_batches(
    batches: trio.MemoryReceiveChannel[list[EventMetrics]],
    export: trio.MemorySendChannel[EventMetrics],
) -> None:
    async with export, batches:
        async for batch in batches:
            for em in batch:
                await export.send(em)
            # Not held while waiting for the next tick: a whole export's clones per target.
            del batch


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
    on_result: Callable[[ProbeResult], None] | None = None,
    export_up: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    observe: Callable[[ProbeResult], None] | None = None,
) -> None:
    """``StatsKeeper(...).run(results, export)`` as one call: the function form of the keeper.

    The keywords are :class:`StatsKeeper`'s (``on_result`` is its ``observe``; ``observe`` here
    is the deprecated spelling); see it for the semantics.
    """
    keeper = StatsKeeper(
        probe_type=probe_type,
        probe_name=probe_name,
        targets=targets,
        interval=interval,
        extra_labels=extra_labels,
        latency_unit=latency_unit,
        latency_distribution=latency_distribution,
        observe=renamed_keyword("observe", observe, "on_result", on_result),
        export_up=export_up,
    )
    await keeper.run(results, export, task_status=task_status)
