"""The live view of ``trioprobe run`` and ``demo``: per-target state, success, latency, errors.

It observes every :class:`~trioprobe.ProbeResult` as the keeper folds it in (exported metrics do
not carry the last error, and their latency percentiles depend on configured buckets).

The state column is the alert state machine's verdict (up / down / unknown, read from the
runner's :class:`~trioprobe.alerting.Health`), the same one the status page, the ``up`` metric,
the notifications and ``--quiet`` use: one idea of health on one screen. The success ratio since
start sits beside the ratio over a recent window (which is what shows a recovery), and the last
error is shown only while it is current: once the target succeeds again it becomes
``last failure 2 min ago``.

Latency percentiles come from a bounded summary per target: two histograms with fine log-spaced
buckets (20 % wide, so an estimate is within ~10 %), the current one and the one before it, each
holding up to 1,000 samples. The percentiles thus cover the most recent 1,000-2,000 results,
cost O(log buckets) per result and are recomputed only for targets that got results since the
last render. (Sorting up to 1,000 latencies per target every refresh took 53 % of a core at
5,000 targets.) The recent window is 12 counting buckets per target, whatever the rate. The
runner's event-loop lag is shown in the caption.

The plain views (:meth:`LiveStats.render_lines`, :meth:`LiveStats.render_changes`) are built a
slice of ``_LINES_PER_STEP`` targets per event-loop step, in an order kept sorted as targets
appear (not sorted at each refresh), with each target's state read from its own entry: a refresh
of 10,000 targets is many short steps, never one long one (issue 19; the step-work guard test).
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from array import array
from collections.abc import Callable, Mapping

import attrs
import trio
from rich.table import Table
from rich.text import Text

from .._looplag import LAG_BUCKETS, LAG_WARN_SECONDS
from ..alerting.health import Health
from ..alerting.state import DOWN, UNKNOWN, UP, AlertRule, State, TargetHealth
from ..metrics import Distribution, Map
from ..results import ProbeResult

__all__ = ["LiveStats", "format_ago", "format_window"]

_RECENT = 1000
# 1 µs to about 70 s in steps of 20 %.
_BUCKETS = Distribution.exponential(base=1.2, scale=1e-6, count=100)
#: The recent window is kept in this many buckets (its resolution is window / 12).
_WINDOW_BUCKETS = 12
_STATE_STYLE = {UP: "green", DOWN: "bold red", UNKNOWN: "dim"}
# Targets rendered per event-loop step (a line is about 30 function calls).
_LINES_PER_STEP = 16


def _format_seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) < 1e-3:
        return f"{value * 1e6:.0f}µs"
    if abs(value) < 1:
        return f"{value * 1e3:.2f}ms"
    return f"{value:.2f}s"


def format_window(seconds: float) -> str:
    """``1m``, ``5m``, ``90s``, ``1h``: the window's length as a column header."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def format_ago(seconds: float) -> str:
    """``just now``, ``12 s ago``, ``2 min ago``, ``3 h ago``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


@attrs.define
class RecentWindow:
    """Results and successes over the last ``seconds``, in fixed buckets (constant memory).

    Machine-number arrays, not lists: a list of 12 bucket numbers holds 12 int objects of
    32 bytes each beside its pointers (issue 19, memory per target: 840 -> 384 bytes)."""

    seconds: float
    _slots: array[int] = attrs.field(factory=lambda: array("q", [-1]) * _WINDOW_BUCKETS)
    _total: array[int] = attrs.field(factory=lambda: array("I", [0]) * _WINDOW_BUCKETS)
    _success: array[int] = attrs.field(factory=lambda: array("I", [0]) * _WINDOW_BUCKETS)

    def add(self, when: float, success: bool) -> None:
        slot = int(when // (self.seconds / _WINDOW_BUCKETS))
        index = slot % _WINDOW_BUCKETS
        if self._slots[index] != slot:
            self._slots[index], self._total[index], self._success[index] = slot, 0, 0
        self._total[index] += 1
        self._success[index] += success

    def counts(self, now: float) -> tuple[int, int]:
        """(results, successes) in the window ending at ``now``."""
        newest = int(now // (self.seconds / _WINDOW_BUCKETS))
        total = success = 0
        for slot, n, ok in zip(self._slots, self._total, self._success, strict=True):
            if newest - _WINDOW_BUCKETS < slot <= newest:
                total += n
                success += ok
        return total, success


def _no_latencies() -> array[int]:
    return array("H", [0]) * len(_BUCKETS.lower_bounds)


@attrs.define
class TargetStats:
    """One target's row. Issue 19, memory per target: 2.9 -> 1.3 KiB with its entry
    (tests/core/test_live.py). The latency histograms are bucket counts in 16-bit arrays over
    the one shared set of bounds (``_RECENT`` fits), made a :class:`Distribution` only when a
    row's percentiles are read; they and the gauges are made by the first result needing them."""

    window: RecentWindow
    total: int = 0
    success: int = 0
    timeouts: int = 0
    last_error: str = ""
    #: The last failure's reason (``Failure.label``: ``timeout (connect)``, ``validation
    #: (regex)``): shown beside the error, while it is current.
    last_reason: str = ""
    #: Wall-clock time of the last failure (0: none yet), and whether the last result failed.
    last_failure: float = 0.0
    failing: bool = False
    #: The latest reading of each gauge (``None`` until a result has one).
    gauges: dict[str, float | int | str | Map] | None = None
    # Counts of the current and previous histograms, and the samples in the current one.
    _current: array[int] | None = None
    _previous: array[int] | None = None
    _in_current: int = 0
    _cached: tuple[float, float] | None = None

    def add_latency(self, seconds: float) -> None:
        current = self._current
        if current is None or self._in_current >= _RECENT:
            self._previous, current = current, _no_latencies()
            self._current, self._in_current = current, 0
        current[bisect.bisect_right(_BUCKETS.lower_bounds, seconds) - 1] += 1
        self._in_current += 1
        self._cached = None

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 over the recent results (NaN before the first success)."""
        if self._cached is None:
            counts = list(self._current or ())
            count = self._in_current
            if self._previous is not None:
                counts = [a + b for a, b in zip(counts, self._previous, strict=True)]
                count += _RECENT
            if count == 0:
                return math.nan, math.nan
            recent = Distribution._trusted(_BUCKETS.lower_bounds, counts, 0.0, count)
            self._cached = recent.percentile(0.5), recent.percentile(0.99)
        return self._cached


class LiveStats:
    """Running per-(probe, target) statistics, rendered as a table or as plain lines.

    Args:
        health: the runner's health state (``Runner.health``), which the runner feeds; without
            one, the view runs the same state machine itself (the default alert rule).
        window: seconds of the recent success window.
        clock: wall-clock time, for the window and "last failure ... ago".
    """

    def __init__(
        self,
        health: Health | None = None,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets: dict[tuple[str, str], TargetStats] = {}
        # The keys of `targets`, kept sorted as they appear: a refresh walks them in order
        # without sorting every target again.
        self._order: list[tuple[str, str]] = []
        # Targets whose last result failed, in the order they began to: a table cut to the
        # terminal's height shows them first, without a pass over every target.
        self._failing: dict[tuple[str, str], None] = {}
        # Every gauge name seen, in order of appearance (the table's extra columns).
        self._gauges: dict[str, None] = {}
        self._health = health
        # Without a Health: the state machine itself, one per target (Health.feed also keeps
        # the status page's history, which needs a Trio clock).
        self._own: dict[tuple[str, str], TargetHealth] = {}
        self.window = window
        self._clock = clock
        # For changes(): the state (and error, when down) last reported per target.
        self._states: dict[tuple[str, str], str] = {}
        #: The runner's event-loop lag samples (seconds); see :meth:`observe_loop_lag`.
        self.loop_lag = LAG_BUCKETS.clone()
        #: Set to the Runner's ``config_errors``: skipped targets-file lines, shown as config
        #: errors (not as failing targets).
        self.config_errors: Callable[[], Mapping[tuple[str, str], str]] | None = None

    @property
    def health(self) -> Health | None:
        """Where the state column comes from. Set it to the runner's (which the runner feeds)
        once the runner exists: the view then stops running a state machine of its own."""
        return self._health

    @health.setter
    def health(self, health: Health) -> None:
        self._health = health
        self._own.clear()

    def observe_loop_lag(self, seconds: float) -> None:
        """One event-loop lag sample (pass as the Runner's ``on_loop_lag``)."""
        self.loop_lag.add_sample(seconds)

    def loop_lag_summary(self) -> str:
        """``event loop lag p50 .. p99 ..``, flagged when p99 exceeds the warning threshold."""
        if self.loop_lag.count == 0:
            return ""
        p50, p99 = self.loop_lag.percentile(0.5), self.loop_lag.percentile(0.99)
        text = f"event loop lag p50={_format_seconds(p50)} p99={_format_seconds(p99)}"
        if p99 > LAG_WARN_SECONDS:
            text += " (latencies may be inflated by this process)"
        return text

    def observe(self, probe: str, result: ProbeResult) -> None:
        stats = self.targets.get((probe, result.target))
        if stats is None:
            key = (probe, result.target)
            stats = self.targets[key] = TargetStats(RecentWindow(self.window))
            bisect.insort(self._order, key)
        stats.total += 1
        stats.window.add(result.timestamp, result.success)
        stats.failing = not result.success
        key = (probe, result.target)
        if result.success:
            stats.success += 1
            stats.add_latency(result.latency)
            self._failing.pop(key, None)
        else:
            self._failing.setdefault(key)
            stats.last_error = result.error or "failed"
            stats.last_reason = result.failure.label if result.failure is not None else "other"
            stats.last_failure = result.timestamp
        if result.timeout:
            stats.timeouts += 1
        if result.gauges:
            if stats.gauges is None:
                stats.gauges = {}
            stats.gauges.update(result.gauges)
            self._gauges.update(dict.fromkeys(result.gauges))
        if self._health is None:
            machine = self._own.get(key)
            if machine is None:
                machine = self._own[key] = TargetHealth(*key, AlertRule(), result.timestamp)
            machine.feed(result)

    def states(self) -> dict[tuple[str, str], State]:
        """Every target's state, as the alert state machine has it (one pass over ``health``)."""
        if self._health is None:
            return {key: machine.state for key, machine in self._own.items()}
        return {(h.probe, h.target): h.state for h, _ in self._health.snapshot()}

    @staticmethod
    def _error_text(stats: TargetStats, state: State, now: float) -> tuple[str, str]:
        """(the current error, how long ago the last failure was): at most one is non-empty.

        A down target, or one whose last result failed, shows its error; a target that has
        recovered shows only when it last failed, so a stale error never reads as current."""
        if stats.last_error and (stats.failing or state == DOWN):
            return stats.last_error, ""
        if stats.last_failure:
            return "", format_ago(now - stats.last_failure)
        return "", ""

    def table(self, title: str = "trioprobe", max_rows: int | None = None) -> Table:
        """The table of every target, or of ``max_rows`` of them (a terminal's height): those
        whose last result failed first, then the others in order, with a caption saying how
        many are shown. Its work is bounded by the rows shown, not by the targets."""
        gauges = list(self._gauges)
        shown = self._rows_to_show(max_rows)
        caption = [self.loop_lag_summary()]
        if len(shown) < len(self.targets):
            caption.append(
                f"{len(shown)} of {len(self.targets)} targets shown, failing first "
                f"({len(self._failing)} failing); all of them: --quiet or the status page"
            )
        table = Table(title=title, expand=False, caption="\n".join(filter(None, caption)) or None)
        self._add_columns(table, gauges)
        now = self._clock()
        for key in shown:
            table.add_row(*self._row(key, gauges, now))
        if self.config_errors is not None:
            for (probe, target), message in sorted(self.config_errors().items()):
                # "config error" in the state column, then reason, total, success, recent, p50,
                # p99 and the gauges.
                blank = ["-"] * (6 + len(gauges))
                status = Text("config error", style="magenta")
                table.add_row(Text(probe), Text(target), status, *blank, Text(message))
        return table

    def _rows_to_show(self, max_rows: int | None) -> list[tuple[str, str]]:
        if max_rows is None or len(self.targets) <= max_rows:
            return self._order
        rows = list(itertools.islice(self._failing, max_rows))
        failing = set(rows)
        for key in self._order:
            if len(rows) >= max_rows:
                break
            if key not in failing:
                rows.append(key)
        return rows

    def _add_columns(self, table: Table, gauges: list[str]) -> None:
        headers = (
            "probe",
            "target",
            "state",
            "reason",
            "total",
            "success",
            f"last {format_window(self.window)}",
            "p50",
            "p99",
        )
        for column in headers:
            left = column in ("probe", "target", "state", "reason")
            # On a narrow terminal a target wraps rather than shrinking to "http:…".
            table.add_column(
                column,
                justify="left" if left else "right",
                overflow="fold" if column in ("probe", "target") else "ellipsis",
                no_wrap=column not in ("probe", "target"),
            )
        for name in gauges:
            table.add_column(name, justify="right")
        table.add_column("last error", overflow="fold", max_width=50)

    def _row(self, key: tuple[str, str], gauges: list[str], now: float) -> list[str | Text]:
        probe, target = key
        stats = self.targets[key]
        state = self.state_of(key)
        p50, p99 = stats.percentiles()
        rate = 100.0 * stats.success / stats.total if stats.total else 0.0
        recent = _recent_rate(stats, now)
        style = "dim" if recent is None else _rate_style(recent)
        error, ago = self._error_text(stats, state, now)
        # Probe names, targets and errors are data: Text() keeps rich from reading "[...]"
        # in them (a regex in an error message) as markup.
        return [
            Text(probe),
            Text(target),
            Text(state, style=_STATE_STYLE[state]),
            Text(stats.last_reason if error else "", style="red"),
            str(stats.total),
            f"{rate:.1f}%",
            Text("-" if recent is None else f"{recent:.1f}%", style=style),
            _format_seconds(p50),
            _format_seconds(p99),
            *(Text(_format_gauge((stats.gauges or {}).get(name))) for name in gauges),
            Text(error) if error else Text(f"last failure {ago}" if ago else "", style="dim"),
        ]

    def state_of(self, key: tuple[str, str]) -> State:
        """One target's state, as the alert state machine has it (no pass over the others)."""
        health = self._health
        machine = self._own.get(key) if health is None else health.entry(*key)
        return UNKNOWN if machine is None else machine.state

    def lines(self) -> list[str]:
        """One line per target, with everything the table shows, in one go (at exit; while
        running, :meth:`render_lines` spreads the same work over many short steps)."""
        now = self._clock()
        return [self._line(*key, self.targets[key], self.state_of(key), now) for key in self._order]

    async def render_lines(self) -> list[str]:
        """:meth:`lines`, built ``_LINES_PER_STEP`` targets per event-loop step."""
        now = self._clock()
        out: list[str] = []
        order = list(self._order)  # a copy: targets may appear while this yields
        for start in range(0, len(order), _LINES_PER_STEP):
            for key in order[start : start + _LINES_PER_STEP]:
                out.append(self._line(*key, self.targets[key], self.state_of(key), now))
            await trio.lowlevel.checkpoint()
        return out

    def changes(self) -> list[str]:
        """Lines for the targets whose state changed since the last call, each led by the state.

        The state is the alert state machine's (``up``, ``DOWN``; ``unknown`` until a verdict,
        which is not reported), so ``--quiet`` says a target is down when the alert fires and
        up when it resolves, not after any one failure or success. A down target is reported
        again when its error changes. This is ``--quiet``: steady targets print once.
        """
        now = self._clock()
        return [line for key in self._order if (line := self._change(key, now))]

    async def render_changes(self) -> list[str]:
        """:meth:`changes`, ``_LINES_PER_STEP`` targets per event-loop step."""
        now = self._clock()
        out: list[str] = []
        order = list(self._order)
        for start in range(0, len(order), _LINES_PER_STEP):
            out += [
                line
                for key in order[start : start + _LINES_PER_STEP]
                if (line := self._change(key, now))
            ]
            await trio.lowlevel.checkpoint()
        return out

    def _change(self, key: tuple[str, str], now: float) -> str:
        """The target's line led by its state if that changed since last reported, else ''."""
        state = self.state_of(key)
        if state == UNKNOWN:
            return ""
        stats = self.targets[key]
        mark = f"{state} {stats.last_error}" if state == DOWN else state
        if self._states.get(key) == mark:
            return ""
        self._states[key] = mark
        label = "DOWN" if state == DOWN else state
        return f"{label}: {self._line(*key, stats, state, now)}"

    def _line(self, probe: str, target: str, stats: TargetStats, state: State, now: float) -> str:
        p50, p99 = stats.percentiles()
        rate = 100.0 * stats.success / stats.total if stats.total else 0.0
        recent = _recent_rate(stats, now)
        gauges = "".join(f" {k}={_format_gauge(v)}" for k, v in (stats.gauges or {}).items())
        error, ago = self._error_text(stats, state, now)
        if error:
            error = f" reason={stats.last_reason} last_error={error!r}"
        elif ago:
            error = f" last_failure={ago!r}"
        window = f"last_{format_window(self.window)}="
        window += "-" if recent is None else f"{recent:.1f}%"
        return (
            f"{probe} {target} total={stats.total} success={rate:.1f}% {window} state={state} "
            f"p50={_format_seconds(p50)} p99={_format_seconds(p99)}{gauges}{error}"
        )


def _recent_rate(stats: TargetStats, now: float) -> float | None:
    total, success = stats.window.counts(now)
    return 100.0 * success / total if total else None


def _rate_style(rate: float) -> str:
    return "green" if rate >= 99.0 else "yellow" if rate >= 90.0 else "red"


def _format_gauge(value: float | int | str | Map | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, Map):
        return " ".join(f"{key}={_format_gauge(number)}" for key, number in value.values.items())
    if isinstance(value, float):
        # Gauges reported in seconds (srtt, clock_diff) read best as durations.
        return _format_seconds(value)
    return str(value)
