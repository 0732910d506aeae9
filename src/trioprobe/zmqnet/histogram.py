"""An HDR-style log-linear latency histogram (integer nanoseconds).

Values below ``2**precision_bits`` are counted exactly; every power-of-two range above is cut into
``2**precision_bits`` equal buckets, so a percentile is within ``2**-precision_bits`` (0.8% at the
default 7 bits) of the true sample whatever its magnitude, in a few hundred sparse buckets. Mean,
standard deviation, minimum and maximum are kept exactly beside it.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["LatencyHistogram"]


@attrs.define
class LatencyHistogram:
    precision_bits: int = 7
    counts: dict[int, int] = attrs.field(factory=dict)
    samples: int = 0
    total: int = 0
    total_squares: int = 0
    minimum: int = 0
    maximum: int = 0

    def _index(self, value: int) -> int:
        sub = 1 << self.precision_bits
        if value < sub:
            return value
        shift = value.bit_length() - 1 - self.precision_bits
        # Bucket block `shift + 1` covers [2**(bits+shift), 2**(bits+shift+1)) in `sub` steps.
        return sub + shift * sub + ((value >> shift) - sub)

    def _bounds(self, index: int) -> tuple[int, int]:
        """The [low, high] values (inclusive) that map to ``index``."""
        sub = 1 << self.precision_bits
        if index < sub:
            return index, index
        shift, offset = divmod(index - sub, sub)
        low = (sub + offset) << shift
        return low, low + (1 << shift) - 1

    def record(self, value: int) -> None:
        """Add one sample (negative values are clamped to 0)."""
        value = max(0, int(value))
        index = self._index(value)
        self.counts[index] = self.counts.get(index, 0) + 1
        if self.samples == 0 or value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        self.samples += 1
        self.total += value
        self.total_squares += value * value

    def merge(self, other: LatencyHistogram) -> None:
        if other.precision_bits != self.precision_bits:
            raise ValueError("cannot merge histograms of different precision")
        if other.samples == 0:
            return
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
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
        """The value at quantile ``q`` in [0, 1]: bucket midpoint, clamped to the observed range."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.samples == 0:
            return 0
        rank = max(1, math.ceil(q * self.samples))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                low, high = self._bounds(index)
                return min(self.maximum, max(self.minimum, (low + high) // 2))
        return self.maximum
