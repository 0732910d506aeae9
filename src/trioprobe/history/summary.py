"""Immutable snapshots of the store that pages, the API and the metrics read.

The service computes a :class:`Summary` off the event loop after each flush; a reader holds a
reference to one and never sees it change, so a page rendered in chunks (or in a thread) is
consistent with itself while the next summary is being made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from .._histogram import Distribution
from ._windows import DAY, Counts

__all__ = ["WINDOWS", "DayFigure", "Incident", "Summary", "TargetSummary", "quantile"]

#: The uptime windows every target gets, in seconds.
WINDOWS: Mapping[str, int] = {
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": DAY,
    "7d": 7 * DAY,
    "30d": 30 * DAY,
}


@attrs.frozen
class Incident:
    """A period a target was down: ``end`` is ``None`` while it lasts."""

    probe: str
    target: str
    start: float
    end: float | None
    reason: str | None
    alert: str


@attrs.frozen
class DayFigure:
    """One day's probes of a target: counted ones (``probes``, ``successes``), and those set
    apart: made while a dependency was down (``blocked``) or in a maintenance window that does
    not count in the SLO (``maintenance``)."""

    day: int
    probes: int
    successes: int
    blocked: int = 0
    maintenance: int = 0

    @property
    def uptime(self) -> float | None:
        return None if self.probes == 0 else self.successes / self.probes


@attrs.frozen
class TargetSummary:
    """One probe x target as of the summary: uptime per window, latency quantiles, SLO."""

    probe: str
    target: str
    counts: Mapping[str, Counts]
    p50_24h: float | None
    p99_24h: float | None
    #: ``"day:probes:successes:blocked:maintenance,..."``: parsed by :meth:`days` only for the
    #: rows shown.
    daily: str = ""
    slo: float | None = None
    budget_remaining: float | None = None
    burn_rates: Mapping[str, float | None] = attrs.field(factory=dict)

    def uptime(self, window: str) -> float | None:
        counts = self.counts.get(window)
        return None if counts is None else counts.uptime

    def day_counts(self) -> dict[int, list[int]]:
        """Day -> [probes, successes, blocked, maintenance], parsed from :attr:`daily` (the
        page's fast path: no objects per day)."""
        sums: dict[int, list[int]] = {}
        if not self.daily:
            return sums
        for part in self.daily.split(","):
            fields = part.split(":")
            acc = sums.get(int(fields[0]))
            if acc is None:
                acc = sums[int(fields[0])] = [0, 0, 0, 0]
            for i in range(1, len(fields)):
                acc[i - 1] += int(fields[i])
        return sums

    def days(self) -> dict[int, DayFigure]:
        return {d: DayFigure(d, *c) for d, c in self.day_counts().items()}


@attrs.frozen
class Summary:
    """Everything the pages show from the store, as of ``at`` (wall clock)."""

    at: float
    targets: Mapping[tuple[str, str], TargetSummary]
    #: Incidents of the last 90 days (and any still open), newest first.
    incidents: tuple[Incident, ...] = ()
    #: Seconds the summary took to compute (in the reader thread).
    took: float = 0.0


#: The summary before any history exists (no targets).
EMPTY = Summary(0.0, {})


def quantile(bounds: tuple[float, ...], hist: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile of a stored histogram, interpolated within its bucket."""
    if not bounds or not hist:
        return None
    counts = [0] * len(bounds)
    for i, n in hist.items():
        if 0 <= i < len(counts):
            counts[i] += n
    total = sum(counts)
    if total == 0:
        return None
    value = Distribution(bounds, counts, 0.0, total).percentile(q)
    return None if math.isnan(value) else max(0.0, value)
