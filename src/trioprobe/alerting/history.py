"""A bounded history of one target's results, for the status page.

Two fixed-size rings, allocated once, so memory per target does not grow with time or rate:

* :data:`BUCKETS` buckets of :data:`BUCKET_SECONDS` (one hour): results, failures and the sum
  of successful latencies per bucket; the success ratios and the sparkline come from these;
* the last :data:`LATENCY_SAMPLES` successful latencies, for p50/p99.

Both are ``array`` objects of machine numbers (no per-result Python objects), of the narrowest
type that holds them (issue 19, memory per target): 32-bit bucket numbers and counts, and the
latency ring in 32-bit floats (7 significant digits, read back rounded to them), about 2.2 KiB
per target (4.3 KiB with 64-bit ones), about 4 KiB with the target's state and window
(``tests/alerting/test_status.py`` measures it).
"""

from __future__ import annotations

import math
from array import array

__all__ = ["BUCKETS", "BUCKET_SECONDS", "LATENCY_SAMPLES", "History"]

BUCKETS = 60
BUCKET_SECONDS = 60.0
LATENCY_SAMPLES = 256


class History:
    """Results of one target over the last hour (times are ``trio.current_time()`` seconds)."""

    __slots__ = ("_count", "_fail", "_lat", "_latency", "_latency_n", "_slot")

    def __init__(self) -> None:
        # _slot[i] is the absolute bucket number bucket i currently holds (-1: never used).
        # A bucket number is seconds / 60: 32 bits last 4,000 years of trio.current_time().
        self._slot = array("i", [-1]) * BUCKETS
        self._count = array("I", [0]) * BUCKETS
        self._fail = array("I", [0]) * BUCKETS
        self._lat = array("d", [0.0]) * BUCKETS
        self._latency = array("f", [0.0]) * LATENCY_SAMPLES
        self._latency_n = 0

    def add(self, now: float, success: bool, latency: float) -> None:
        n = int(now // BUCKET_SECONDS)
        i = n % BUCKETS
        if self._slot[i] != n:
            self._slot[i] = n
            self._count[i] = self._fail[i] = 0
            self._lat[i] = 0.0
        self._count[i] += 1
        if success:
            self._lat[i] += latency
            self._latency[self._latency_n % LATENCY_SAMPLES] = latency
            self._latency_n += 1
        else:
            self._fail[i] += 1

    def _buckets(self, now: float, seconds: float) -> list[int]:
        """Indices of the buckets within ``seconds`` of ``now``, oldest first."""
        n = int(now // BUCKET_SECONDS)
        span = min(BUCKETS, max(1, math.ceil(seconds / BUCKET_SECONDS)))
        return [
            (n - k) % BUCKETS
            for k in range(span - 1, -1, -1)
            if self._slot[(n - k) % BUCKETS] == n - k
        ]

    def success_ratio(self, now: float, seconds: float) -> float | None:
        """Successes / results over the last ``seconds`` (``None`` when there were none)."""
        total = fails = 0
        for i in self._buckets(now, seconds):
            total += self._count[i]
            fails += self._fail[i]
        return None if total == 0 else (total - fails) / total

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the recent successful latencies, nearest rank."""
        n = min(self._latency_n, LATENCY_SAMPLES)
        if n == 0:
            return None
        ordered = sorted(self._latency[:n])
        # Stored as a 32-bit float: 0.004 comes back as 0.0040000002; its 7 digits are exact.
        return float(f"{ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]:.7g}")

    def series(self, now: float) -> list[tuple[float | None, int, int]]:
        """Per minute of the last hour, oldest first: (mean latency or None, results, failures)."""
        n = int(now // BUCKET_SECONDS)
        out: list[tuple[float | None, int, int]] = []
        for k in range(BUCKETS - 1, -1, -1):
            i = (n - k) % BUCKETS
            if self._slot[i] != n - k:
                out.append((None, 0, 0))
                continue
            ok = self._count[i] - self._fail[i]
            out.append((self._lat[i] / ok if ok else None, self._count[i], self._fail[i]))
        return out
