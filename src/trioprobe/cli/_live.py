"""The live view of ``trioprobe run`` and ``demo``: per-target success rate, latency, last error.

It observes every :class:`~trioprobe.ProbeResult` as the keeper folds it in (exported metrics do
not carry the last error, and their latency percentiles depend on configured buckets).

Latency percentiles come from a bounded summary per target: two histograms with fine log-spaced
buckets (20 % wide, so an estimate is within ~10 %), the current one and the one before it, each
holding up to 1,000 samples. The percentiles thus cover the most recent 1,000-2,000 results,
cost O(log buckets) per result and are recomputed only for targets that got results since the
last render. (Sorting up to 1,000 latencies per target every refresh took 53 % of a core at
5,000 targets.) The runner's event-loop lag is shown in the caption.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import attrs
from rich.table import Table
from rich.text import Text

from .._looplag import LAG_BUCKETS, LAG_WARN_SECONDS
from ..metrics import Distribution, Map
from ..results import ProbeResult

__all__ = ["LiveStats"]

_RECENT = 1000
# 1 µs to about 70 s in steps of 20 %.
_BUCKETS = Distribution.exponential(base=1.2, scale=1e-6, count=100)


def _format_seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) < 1e-3:
        return f"{value * 1e6:.0f}µs"
    if abs(value) < 1:
        return f"{value * 1e3:.2f}ms"
    return f"{value:.2f}s"


@attrs.define
class TargetStats:
    total: int = 0
    success: int = 0
    timeouts: int = 0
    last_error: str = ""
    current: Distribution = attrs.field(factory=_BUCKETS.clone)
    previous: Distribution | None = None
    gauges: dict[str, float | int | str | Map] = attrs.field(factory=dict)
    _cached: tuple[float, float] | None = None

    def add_latency(self, seconds: float) -> None:
        if self.current.count >= _RECENT:
            self.previous, self.current = self.current, _BUCKETS.clone()
        self.current.add_sample(seconds)
        self._cached = None

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 over the recent results (NaN before the first success)."""
        if self._cached is None:
            recent = self.current
            if self.previous is not None:
                recent = recent.clone()
                recent.add(self.previous)
            self._cached = recent.percentile(0.5), recent.percentile(0.99)
        return self._cached


class LiveStats:
    """Running per-(probe, target) statistics, rendered as a table or as plain lines."""

    def __init__(self) -> None:
        self.targets: dict[tuple[str, str], TargetStats] = {}
        # For changes(): (total, success) at the last call, and the state last reported.
        self._marks: dict[tuple[str, str], tuple[int, int]] = {}
        self._states: dict[tuple[str, str], str] = {}
        #: The runner's event-loop lag samples (seconds); see :meth:`observe_loop_lag`.
        self.loop_lag = LAG_BUCKETS.clone()
        #: Set to the Runner's ``config_errors``: skipped targets-file lines, shown as config
        #: errors (not as failing targets).
        self.config_errors: Callable[[], Mapping[tuple[str, str], str]] | None = None

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
            stats = self.targets[(probe, result.target)] = TargetStats()
        stats.total += 1
        if result.success:
            stats.success += 1
            stats.add_latency(result.latency)
        else:
            stats.last_error = result.error or "failed"
        if result.timeout:
            stats.timeouts += 1
        stats.gauges.update(result.gauges)

    def _gauge_names(self) -> list[str]:
        names: dict[str, None] = {}
        for stats in self.targets.values():
            names.update(dict.fromkeys(stats.gauges))
        return list(names)

    def table(self, title: str = "trioprobe") -> Table:
        gauges = self._gauge_names()
        table = Table(title=title, expand=False, caption=self.loop_lag_summary() or None)
        for column in ("probe", "target", "total", "success", "p50", "p99"):
            table.add_column(
                column, justify="right" if column not in ("probe", "target") else "left"
            )
        for name in gauges:
            table.add_column(name, justify="right")
        table.add_column("last error", overflow="fold", max_width=50)
        for (probe, target), stats in sorted(self.targets.items()):
            p50, p99 = stats.percentiles()
            rate = 100.0 * stats.success / stats.total if stats.total else 0.0
            style = "green" if rate >= 99.0 else "yellow" if rate >= 90.0 else "red"
            # Probe names, targets and errors are data: Text() keeps rich from reading "[...]"
            # in them (a regex in an error message) as markup.
            row: list[str | Text] = [
                Text(probe),
                Text(target),
                str(stats.total),
                Text(f"{rate:.1f}%", style=style),
                _format_seconds(p50),
                _format_seconds(p99),
                *(Text(_format_gauge(stats.gauges.get(name))) for name in gauges),
                Text(stats.last_error),
            ]
            table.add_row(*row)
        if self.config_errors is not None:
            for (probe, target), message in sorted(self.config_errors().items()):
                # "config error" in the total column, then success, p50, p99 and the gauges.
                blank = ["-"] * (3 + len(gauges))
                status = Text("config error", style="magenta")
                table.add_row(Text(probe), Text(target), status, *blank, Text(message))
        return table

    def lines(self) -> list[str]:
        """One line per target, with everything the table shows."""
        return [
            _line(probe, target, stats) for (probe, target), stats in sorted(self.targets.items())
        ]

    def changes(self) -> list[str]:
        """Lines for the targets whose state changed since the last call, each led by the state.

        A target is ``ok`` if every probe since the last call succeeded, else ``FAILING``; a
        failing target is reported again when its error changes. Targets with no new results
        keep their state. This is ``--quiet``: steady targets print once, not every second.
        """
        out = []
        for key, stats in sorted(self.targets.items()):
            total, success = self._marks.get(key, (0, 0))
            if stats.total == total:
                continue
            self._marks[key] = (stats.total, stats.success)
            failed = (stats.total - total) - (stats.success - success)
            state = f"FAILING ({stats.last_error})" if failed else "ok"
            if self._states.get(key) != state:
                self._states[key] = state
                out.append(f"{'FAILING' if failed else 'ok'}: {_line(*key, stats)}")
        return out


def _line(probe: str, target: str, stats: TargetStats) -> str:
    p50, p99 = stats.percentiles()
    rate = 100.0 * stats.success / stats.total if stats.total else 0.0
    gauges = "".join(f" {k}={_format_gauge(v)}" for k, v in stats.gauges.items())
    error = f" last_error={stats.last_error!r}" if stats.last_error else ""
    return (
        f"{probe} {target} total={stats.total} success={rate:.1f}% "
        f"p50={_format_seconds(p50)} p99={_format_seconds(p99)}{gauges}{error}"
    )


def _format_gauge(value: float | int | str | Map | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, Map):
        return " ".join(f"{key}={_format_gauge(number)}" for key, number in value.values.items())
    if isinstance(value, float):
        # Gauges reported in seconds (srtt, clock_diff) read best as durations.
        return _format_seconds(value)
    return str(value)
