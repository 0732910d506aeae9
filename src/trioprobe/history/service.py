"""``HistoryService``: the Trio side of the store.

Results come in synchronously through :meth:`HistoryService.feed` (the runner's tap, beside
alerting's) and are folded into per-target accumulators of the current rollup period: a dict
update, no I/O. Transitions come from :meth:`Health.add_listener`. Once a period ends, the
service hands every closed accumulator and the transitions since the last write to the writer
thread in one transaction, then downsamples, prunes and computes a new :class:`Summary` in the
reader thread. A ``kill -9`` therefore loses the current period and nothing older.

History never stops probing: an unreadable database is moved aside and a fresh one started (at
start-up and when a write finds it damaged); a write that fails otherwise (disk full) is logged
and its rows are dropped and counted.
"""

from __future__ import annotations

import bisect
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

import trio

from .._groups import open_nursery
from ..metrics import EventMetrics, Float, Kind
from ..results import LATENCY_UNITS, ProbeResult
from ..specs import HistorySpec, ProbeSpec
from . import store as _store
from ._windows import DAY, Counts, burn_rate, ceil_to, error_budget_remaining, floor_to
from .summary import EMPTY, WINDOWS, Incident, Summary, TargetSummary, quantile

if TYPE_CHECKING:  # alerting's status page imports this package
    from ..alerting.state import Transition

__all__ = ["DEFAULT_BOUNDS", "HistoryService", "compute_summary"]

logger = logging.getLogger("trioprobe.history")

#: Latency buckets (seconds) of probes without ``latency_buckets``: enough for p50/p99 to within
#: a bucket from 0.5 ms to 10 s.
DEFAULT_BOUNDS = (
    0.0,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Seconds after a period ends before it is written: results made at its very end get in.
_GRACE = 1.0
# Shared by every summary entry that has none (see summarize: memory per target).
_NO_COUNTS = Counts()
_NO_BURNS: Mapping[str, float | None] = MappingProxyType({})
T = TypeVar("T")


class _Acc:
    __slots__ = ("blocked", "error", "hist", "latency_sum", "maint", "probes", "successes")

    def __init__(self) -> None:
        self.probes = self.successes = self.blocked = self.maint = 0
        self.latency_sum = 0.0
        self.hist: dict[int, int] = {}
        self.error: str | None = None


def _bounds_of(spec: ProbeSpec) -> tuple[float, ...]:
    if spec.latency_buckets is None:
        return (-math.inf, *DEFAULT_BOUNDS)
    return spec.latency_buckets.distribution(LATENCY_UNITS[spec.latency_unit]).lower_bounds


class HistoryService:
    """Records every result and transition of a runner's probes (see the module doc).

    Args:
        spec: the ``[history]`` table (``path`` already resolved).
        probes: the probes, in config order (their buckets and SLOs).
        wall: the wall clock; tests pass one driven by Trio's clock.
    """

    def __init__(
        self,
        spec: HistorySpec,
        probes: Sequence[ProbeSpec],
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.path = Path(spec.path)
        self.step = spec.rollup
        self.wall = wall
        self.retention = _store.Retention(
            spec.keep_minutes_hours * 3600.0, spec.keep_hours_days * DAY, spec.keep_days_days * DAY
        )
        self.probes = {p.name: p for p in probes}
        self._bounds = {p.name: _bounds_of(p) for p in probes}
        self._encoded = {name: _store.encode_bounds(b) for name, b in self._bounds.items()}
        self._open: dict[tuple[str, str, int], _Acc] = {}
        self._transitions: list[_store.TransitionRow] = []
        self._store: _store.Store | None = None
        self._writer = trio.CapacityLimiter(1)
        self._reader = trio.CapacityLimiter(1)
        self._finished = trio.Event()
        self._summarized = trio.Event()
        self._next_summary = 0.0
        self._daily = DailyCache()
        #: The latest summary (replaced whole, never changed in place).
        self.summary: Summary = EMPTY
        #: True when the store could not be opened at all: nothing is recorded.
        self.disabled = False
        #: Rollup rows lost to failed writes.
        self.dropped = 0
        #: Called with each new summary, on the loop (the runner passes burn rates to health).
        self.listeners: list[Callable[[Summary], None]] = []
        #: Every period that starts before this (wall clock) is written.
        self.flushed_until = -math.inf
        #: ``set_aside(probe, target)``: ``"blocked"`` or ``"maintenance"`` when a result made
        #: now is kept apart from uptime and SLOs (the runner passes the alerting service's).
        self.set_aside: Callable[[str, str], str | None] | None = None

    def set_probes(self, probes: Sequence[ProbeSpec]) -> None:
        """Take a reloaded config's probes: those added get history (their buckets, their SLO
        figures in the next summary), those removed keep what they have in the store."""
        self.probes = {p.name: p for p in probes}
        self._bounds = {p.name: _bounds_of(p) for p in probes}
        self._encoded = {name: _store.encode_bounds(b) for name, b in self._bounds.items()}

    # -- input (on the loop, synchronous) -----------------------------------------------------
    def feed(self, probe: str, result: ProbeResult) -> None:
        if self.disabled:
            return
        key = (probe, result.target, int(result.timestamp // self.step) * self.step)
        acc = self._open.get(key)
        if acc is None:
            acc = self._open[key] = _Acc()
        why = None if self.set_aside is None else self.set_aside(probe, result.target)
        if why is not None:
            # Counted apart, not in uptime: neither a success nor a failure of the target.
            if why == "blocked":
                acc.blocked += 1
            else:
                acc.maint += 1
            return
        acc.probes += 1
        if result.success:
            acc.successes += 1
            acc.latency_sum += result.latency
            bounds = self._bounds.get(probe)
            if bounds is None:
                bounds = self._bounds[probe] = (-math.inf, *DEFAULT_BOUNDS)
                self._encoded[probe] = _store.encode_bounds(bounds)
            i = bisect.bisect_right(bounds, result.latency) - 1
            acc.hist[i] = acc.hist.get(i, 0) + 1
        else:
            acc.error = result.error or ("timeout" if result.timeout else "failed")

    def on_transition(self, tr: Transition) -> None:
        """Record a transition (a listener of :class:`~trioprobe.alerting.Health`)."""
        self._transitions.append(
            _store.TransitionRow(tr.probe, tr.target, tr.since, tr.old, tr.new, tr.error, tr.alert)
        )

    def finish(self) -> None:
        """The probes have stopped: write everything, the open period too, and end :meth:`run`."""
        self._finished.set()

    # -- the task -----------------------------------------------------------------------------
    async def run(
        self,
        export: trio.MemorySendChannel[EventMetrics] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open the store, then write every period until :meth:`finish` (owns ``export``)."""
        try:
            self._store = await trio.to_thread.run_sync(_store.open_store, self.path)
        except (OSError, sqlite3.Error) as exc:
            # Not a damaged file (that is moved aside) but a path that cannot be used at all
            # (a folder without permission): run without history rather than not at all.
            logger.error("history is off: cannot open %s: %s", self.path, exc)
            self.disabled = True
            self._open.clear()
            if export is not None:
                export.close()
            task_status.started()
            await self._finished.wait()
            return
        try:
            async with open_nursery() as nursery:
                if export is not None:
                    nursery.start_soon(self._export_loop, export)
                await self._flush(final=False)
                task_status.started()
                final = False
                while not final:
                    now = self.wall()
                    delay = floor_to(now, self.step) + self.step + _GRACE - now
                    with trio.move_on_after(delay):
                        await self._finished.wait()
                    # Checked after the wait, so a finish() that came during a flush still
                    # gets its final flush.
                    final = self._finished.is_set()
                    await self._flush(final=final)
                nursery.cancel_scope.cancel()
        finally:
            store, self._store = self._store, None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store.close)

    async def _thread(self, limiter: trio.CapacityLimiter, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=limiter)

    async def _flush(self, *, final: bool) -> None:
        now = self.wall()
        cut = math.inf if final else floor_to(now, self.step)
        rows = []
        for key in [k for k in self._open if k[2] < cut]:
            acc = self._open.pop(key)
            probe, target, t = key
            rows.append(
                _store.MinuteRow(
                    probe,
                    target,
                    self._encoded.get(probe, ""),
                    t,
                    acc.probes,
                    acc.successes,
                    acc.latency_sum,
                    acc.hist,
                    acc.error,
                    acc.blocked,
                    acc.maint,
                )
            )
        transitions, self._transitions = self._transitions, []
        await self._write(rows, transitions, now)
        self.flushed_until = cut
        if not final and now >= self._next_summary:
            summary = await self._thread(
                self._reader,
                lambda: compute_summary(self._live_store(), cut, self.probes, self._daily),
            )
            self.summary = summary
            for listener in self.listeners:
                listener(summary)
            # A summary of a large fleet costs; never spend more than a fifth of the time on it.
            self._next_summary = now + max(0.0, 4 * summary.took)
            self._summarized.set()
            self._summarized = trio.Event()

    def _live_store(self) -> _store.Store:
        if self._store is None:
            raise RuntimeError("the history store is closed")
        return self._store

    async def _write(
        self, rows: list[_store.MinuteRow], transitions: list[_store.TransitionRow], now: float
    ) -> None:
        def write() -> None:
            store = self._live_store()
            if rows or transitions:
                store.write(rows, transitions)
            store.maintain(now, self.step, self.retention)

        try:
            await self._thread(self._writer, write)
        except sqlite3.OperationalError as exc:
            self.dropped += len(rows)
            logger.warning(
                "history: could not write %d row(s) to %s: %s", len(rows), self.path, exc
            )
        except sqlite3.DatabaseError as exc:
            # Damaged under us: start afresh (the rows of this period go into the new file).
            why = exc
            async with self._reader:
                await self._thread(self._writer, lambda: self._replace(why))
            try:
                await self._thread(self._writer, write)
            except sqlite3.Error as again:
                self.dropped += len(rows)
                logger.warning("history: could not write to a fresh %s: %s", self.path, again)

    def _replace(self, why: BaseException) -> None:
        old = self._live_store()
        old.close()
        _store._move_aside(self.path, why)
        self._store = _store.Store(self.path)

    async def flush(self) -> Summary:
        """Write every closed period now and compute a new summary (tools and tests; the
        service does this by itself after each period)."""
        self._next_summary = 0.0
        await self._flush(final=False)
        return self.summary

    async def wait_summary(self) -> Summary:
        """The next summary (tests and tools: figures as of the next period's end)."""
        await self._summarized.wait()
        return self.summary

    # -- metrics ------------------------------------------------------------------------------
    async def _export_loop(self, export: trio.MemorySendChannel[EventMetrics]) -> None:
        async with export:
            while True:
                summary = await self.wait_summary()
                for em in slo_metrics(summary, self.probes):
                    await export.send(em)

    # -- reads for pages and the API ----------------------------------------------------------
    async def read(self, fn: Callable[[_store.Store], T]) -> T:
        """Run ``fn(store)`` in the reader thread."""
        return await self._thread(self._reader, lambda: fn(self._live_store()))


def slo_metrics(summary: Summary, probes: dict[str, ProbeSpec]) -> list[EventMetrics]:
    """Per target of a probe with an ``slo``: budget left, burn rates 1 h / 6 h, uptime."""
    out = []
    for ts in summary.targets.values():
        spec = probes.get(ts.probe)
        if spec is None or spec.slo is None:
            continue
        values: list[tuple[str, str, float | None]] = [
            ("slo_error_budget_remaining_ratio", "", ts.budget_remaining),
            ("slo_objective_ratio", "", spec.slo),
        ]
        values += [("slo_burn_rate", w, r) for w, r in ts.burn_rates.items()]
        for name, window, value in values:
            if value is None:
                continue
            em = EventMetrics(Kind.GAUGE, summary.at).add_metric(name, Float(value))
            em.add_label("ptype", spec.type).add_label("probe", spec.name).add_label(
                "dst", ts.target
            )
            if window:
                em.add_label("window", window)
            for k, v in spec.labels.items():
                em.add_label(k, v)
            out.append(em)
    return out


class DailyCache:
    """The 90-day bar's figures of the days before today, read once a day: only today's day
    rows change from one summary to the next (a result that arrives after its day was read is
    in uptime at once and on the bar the next day). A fifth of a 5,000-target summary."""

    def __init__(self) -> None:
        self.day = -1
        self.past: dict[int, str] = {}

    def daily(self, store: _store.Store, today: int, end: float) -> dict[int, str]:
        marks = store.watermarks()
        if self.day != today:
            self.past = store.daily(today - 89 * DAY, today, marks)
            self.day = today
        daily = dict(self.past)
        for tid, text in store.daily(today, end, marks).items():
            daily[tid] = f"{daily[tid]},{text}" if tid in daily else text
        return daily


def compute_summary(
    store: _store.Store,
    now: float,
    probes: dict[str, ProbeSpec],
    cache: DailyCache | None = None,
) -> Summary:
    """Every target's figures as of ``now`` (a period boundary): runs in the reader thread.

    p50/p99 over 24 h are read from whole hours (the far edge counted to the hour: a third of
    the rows, and the histograms are what a summary spends most on); uptime is exact to the
    minute as docs/history.md says."""
    started = time.perf_counter()
    marks = store.watermarks()
    latest = store.latest()
    # Nothing is written at or after ``now`` (a period is written once it has ended), so the
    # windows may end at the end of today: the partial hour and day rows then answer for their
    # minutes. (A clock stepped back leaves rows ahead of ``now``: then the minutes are read.)
    end = ceil_to(now, DAY) if latest is None or latest < now else now
    ids = store.targets()
    windows = dict(WINDOWS)
    for pspec in probes.values():
        if pspec.slo is not None:
            windows.setdefault(f"slo:{int(pspec.slo_window)}", int(pspec.slo_window))
    # An SLO window as long as a standard one (30 d) is read once.
    by_length = {secs: store.counts(now - secs, end, marks) for secs in set(windows.values())}
    counts = {w: by_length[secs] for w, secs in windows.items()}
    hists = store.hists(ceil_to(now - DAY, 3600), end, marks)
    daily = (cache or DailyCache()).daily(store, floor_to(now, DAY), end)
    targets = {}
    # Targets probed alike have equal counts in every window: they share one mapping, which a
    # summary holds for every target (issue 19, memory per target).
    shared: dict[tuple[Counts, ...], Mapping[str, Counts]] = {}
    shown = [w for w in counts if not w.startswith("slo:")]
    for (probe, target), (tid, bounds) in ids.items():
        spec = probes.get(probe)
        if spec is None:
            continue
        own = {w: c.get(tid, _NO_COUNTS) for w, c in counts.items()}
        values = tuple(own[w] for w in shown)
        windows_counts = shared.get(values)
        if windows_counts is None:
            windows_counts = MappingProxyType(dict(zip(shown, values, strict=True)))
            shared[values] = windows_counts
        hist = hists.get(tid, {})
        budget, burns = None, _NO_BURNS
        if spec.slo is not None:
            budget = error_budget_remaining(own[f"slo:{int(spec.slo_window)}"], spec.slo)
            burns = {w: burn_rate(own[w], spec.slo) for w in ("1h", "6h")}
        targets[(probe, target)] = TargetSummary(
            probe=probe,
            target=target,
            counts=windows_counts,
            p50_24h=quantile(bounds, hist, 0.5),
            p99_24h=quantile(bounds, hist, 0.99),
            daily=daily.get(tid, ""),
            slo=spec.slo,
            budget_remaining=budget,
            burn_rates=burns,
        )
    incidents = tuple(Incident(*row) for row in store.incidents(now - 90 * DAY))
    return Summary(now, targets, incidents, time.perf_counter() - started)
