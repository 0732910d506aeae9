"""The zmq benchmark's latency statistics: exact moments beside a log-linear ``Distribution``.

The percentiles come from trioprobe's one histogram type, with HDR-style log-linear buckets over
integer nanoseconds (``Distribution.log_linear``): values below ``2**7`` are exact and every
power-of-two range above is cut into 128 equal buckets, so a percentile is within 0.8 % of the
true sample whatever its magnitude. Count, sum, sum of squares, minimum and maximum are kept
exactly beside it (integers), as the reference reports them.
"""

from __future__ import annotations

import math

import attrs

from .._histogram import Distribution

__all__ = ["LatencyStats"]

_PRECISION_BITS = 7


def _buckets() -> Distribution:
    return Distribution.log_linear(precision_bits=_PRECISION_BITS)


@attrs.define
class LatencyStats:
    """Latency samples in integer nanoseconds."""

    buckets: Distribution = attrs.field(factory=_buckets)
    samples: int = 0
    total: int = 0
    total_squares: int = 0
    minimum: int = 0
    maximum: int = 0

    def record(self, value: int) -> None:
        """Add one sample (negative values are clamped to 0)."""
        value = max(0, int(value))
        self.buckets.add_sample(value)
        if self.samples == 0 or value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        self.samples += 1
        self.total += value
        self.total_squares += value * value

    def merge(self, other: LatencyStats) -> None:
        """Add ``other``'s samples (``MetricsError`` if its buckets differ)."""
        if other.samples == 0:
            return
        self.buckets.add(other.buckets)
        self.minimum = other.minimum if self.samples == 0 else min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.samples += other.samples
        self.total += other.total
        self.total_squares += other.total_squares

    @property
    def mean(self) -> float:
        return self.total / self.samples if self.samples else 0.0

    @property
    def variance(self) -> float:
        """Sample variance ``(n*sum(x^2) - sum(x)^2) / (n*(n-1))``, as in the reference."""
        n = self.samples
        if n < 2:
            return 0.0
        return (n * self.total_squares - self.total * self.total) / (n * (n - 1))

    @property
    def stddev(self) -> float:
        return math.sqrt(self.variance)

    def percentile(self, q: float) -> int:
        """The value at quantile ``q`` in [0, 1], in whole nanoseconds within the observed range;
        0 without samples."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.samples == 0:
            return 0
        return min(self.maximum, max(self.minimum, round(self.buckets.percentile(q))))
