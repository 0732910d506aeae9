"""Time arithmetic of the store: tiers, which rows answer a window, and the SLO figures.

Pure functions (no SQLite, no Trio) so the arithmetic is tested against hand-computed truth on
its own. A window ``[a, b)`` is answered from the coarsest rows that lie wholly inside it and
that the downsampler has finished, and from finer rows at its edges: days in the middle, hours
around them, minutes at the ends. So a 24 h window is exact to the minute (minutes are kept for
48 h) and a 30 d window to the hour at its far edge (minutes there are gone).
"""

from __future__ import annotations

import math

import attrs

__all__ = [
    "DAY",
    "HOUR",
    "TIER_DAY",
    "TIER_HOUR",
    "TIER_MINUTE",
    "Counts",
    "burn_rate",
    "ceil_to",
    "error_budget_remaining",
    "floor_to",
    "plan",
]

HOUR = 3600
DAY = 86400
TIER_MINUTE = 0
TIER_HOUR = 1
TIER_DAY = 2


def floor_to(t: float, step: int) -> int:
    return math.floor(t / step) * step


def ceil_to(t: float, step: int) -> int:
    return math.ceil(t / step) * step


def plan(a: float, b: float, hours_done: int, days_done: int) -> list[tuple[int, int, int]]:
    """The ``(tier, lo, hi)`` row ranges (``lo <= row start < hi``) that cover ``[a, b)`` once.

    ``hours_done``/``days_done`` are the downsampler's watermarks: every hour (day) row that
    starts before them is written. Minute rows answer whatever hours and days cannot; where
    they have been pruned (older than the minute retention), that edge is counted to the hour.
    """
    lo, hi = math.ceil(a), math.ceil(b)
    if lo >= hi:
        return []
    out: list[tuple[int, int, int]] = []
    ha, hb = ceil_to(lo, HOUR), min(floor_to(hi, HOUR), hours_done)
    if ha >= hb:
        return [(TIER_MINUTE, lo, hi)]
    da, db = ceil_to(lo, DAY), min(floor_to(hi, DAY), days_done, hb)
    if da < db and da >= ha:
        out.append((TIER_DAY, da, db))
        out.extend((TIER_HOUR, x, y) for x, y in ((ha, da), (db, hb)) if x < y)
    else:
        out.append((TIER_HOUR, ha, hb))
    out.extend((TIER_MINUTE, x, y) for x, y in ((lo, ha), (hb, hi)) if x < y)
    return out


@attrs.frozen
class Counts:
    """Probes and successes over some span, and the probes set apart from them: made while a
    dependency was down (``blocked``) or in a maintenance window that does not count in the
    SLO (``maintenance``). Uptime and SLOs are ``successes / probes``: the set-apart ones are
    in neither."""

    probes: int = 0
    successes: int = 0
    blocked: int = 0
    maintenance: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.probes + other.probes,
            self.successes + other.successes,
            self.blocked + other.blocked,
            self.maintenance + other.maintenance,
        )

    @property
    def uptime(self) -> float | None:
        """Successes / probes, ``None`` with no probes (no data is not 100 %)."""
        return None if self.probes == 0 else self.successes / self.probes

    def share(self, what: str) -> float | None:
        """The share of all probes that were ``"blocked"`` or in ``"maintenance"``."""
        held = self.blocked if what == "blocked" else self.maintenance
        total = self.probes + self.blocked + self.maintenance
        return None if total == 0 else held / total


def burn_rate(counts: Counts, slo: float) -> float | None:
    """How fast the error budget burns: the failure ratio over the allowed one (1.0 spends
    exactly the budget over the SLO window; 14.4 over 1 h is the SRE workbook's page)."""
    if counts.probes == 0:
        return None
    return (1 - counts.successes / counts.probes) / (1 - slo)


def error_budget_remaining(counts: Counts, slo: float) -> float | None:
    """The share of the SLO window's error budget not yet spent (negative once overspent)."""
    if counts.probes == 0:
        return None
    allowed = (1 - slo) * counts.probes
    return 1 - (counts.probes - counts.successes) / allowed
