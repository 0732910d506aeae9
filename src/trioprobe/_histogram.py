"""The one histogram type: :class:`Distribution`, samples counted into buckets by lower bound.

A leaf module (it imports nothing from trioprobe), so the capability packages that keep
histograms (``probing``'s monitor, ``logping``'s pinger, ``zmqnet``'s benchmark) stand alone;
:mod:`trioprobe.metrics` re-exports it as a metric value.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable

import attrs

__all__ = ["Distribution", "MetricsError"]


class MetricsError(ValueError):
    """Values or metrics that cannot be combined: mismatched kinds, types or bucket bounds."""


def _format_number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _check_same_type(value: object, other: object) -> None:
    if type(value) is not type(other):
        raise MetricsError(f"cannot combine {type(value).__name__} with {type(other).__name__}")


@attrs.define
class Distribution:
    """A histogram: samples counted into buckets by lower bound, plus their sum and count.

    ``lower_bounds`` always starts at ``-inf``; a sample lands in the last bucket whose lower bound
    is <= the sample. Percentiles are estimates, interpolated linearly inside the bucket that holds
    the rank; their error is bounded by the bucket width, so pick bounds for the precision you need.
    """

    lower_bounds: tuple[float, ...]
    bucket_counts: list[int] = attrs.field()
    sum: float = 0.0
    count: int = 0

    @bucket_counts.default
    def _zero_counts(self) -> list[int]:
        return [0] * len(self.lower_bounds)

    def __attrs_post_init__(self) -> None:
        bounds = self.lower_bounds
        if not bounds or bounds[0] != -math.inf:
            raise MetricsError("a distribution's lower bounds must start with -inf")
        if any(b <= a for a, b in itertools.pairwise(bounds)):
            raise MetricsError(f"bucket bounds must increase strictly: {list(bounds)}")
        if len(self.bucket_counts) != len(bounds):
            raise MetricsError(f"{len(self.bucket_counts)} bucket counts for {len(bounds)} buckets")

    @classmethod
    def explicit(cls, bounds: Iterable[float]) -> Distribution:
        """Buckets at the given (increasing) bounds, e.g. ``[0.001, 0.01, 0.1]``."""
        return cls((-math.inf, *bounds))

    @classmethod
    def exponential(cls, *, base: float = 2.0, scale: float = 1.0, count: int = 20) -> Distribution:
        """Buckets ``[0, scale, scale*base, ..., scale*base**(count-1)]``, as cloudprober's."""
        if base < 1.01:
            raise MetricsError(f"exponential bucket base must be >= 1.01, got {base}")
        if scale <= 0 or count < 1:
            raise MetricsError("exponential buckets need scale > 0 and count >= 1")
        return cls.explicit([0.0, *(scale * base**i for i in range(count))])

    @classmethod
    def log_linear(
        cls, *, precision_bits: int = 7, unit: float = 1.0, max_value: float = 2.0**44
    ) -> Distribution:
        """HDR-style log-linear buckets: a percentile within ``2**-precision_bits`` of the truth.

        In units of ``unit``, values below ``2**precision_bits`` get buckets of width 1, and each
        power-of-two range above is cut into ``2**precision_bits`` equal buckets, up to
        ``max_value`` units (above it, one open bucket). At the default 7 bits a percentile is
        within 0.8 % (or one unit) of the sample whatever its magnitude: the zmq benchmark's
        nanosecond latencies up to 2**44 ns (~4.9 h) take about 4,500 buckets.
        """
        if not 1 <= precision_bits <= 16:
            raise MetricsError(f"precision_bits must be within [1, 16], got {precision_bits}")
        if not (unit > 0 and math.isfinite(unit)) or not max_value >= 2**precision_bits:
            raise MetricsError(
                "log-linear buckets need unit > 0 and max_value >= 2**precision_bits"
            )
        sub = 1 << precision_bits
        bounds = list(range(sub))
        shift = 0
        while bounds[-1] < max_value:
            bounds.extend((sub + i) << shift for i in range(sub))
            shift += 1
        return cls.explicit(
            [b * unit for b in bounds] if unit != 1.0 else [float(b) for b in bounds]
        )

    def add_sample(self, sample: float) -> None:
        index = bisect.bisect_right(self.lower_bounds, sample) - 1
        self.bucket_counts[index] += 1
        self.sum += sample
        self.count += 1

    def percentile(self, q: float) -> float:
        """Estimate the ``q`` quantile (``0 <= q <= 1``); NaN when there are no samples."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return math.nan
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.bucket_counts):
            if n and seen + n >= rank:
                lower = self.lower_bounds[i]
                upper = self.lower_bounds[i + 1] if i + 1 < len(self.lower_bounds) else math.inf
                # Open-ended buckets have no width to interpolate over: report the finite edge.
                if lower == -math.inf:
                    return upper
                if upper == math.inf:
                    return lower
                return lower + (upper - lower) * max(rank - seen, 0.0) / n
            seen += n
        return self.lower_bounds[-1]

    def _check_bounds(self, other: object) -> Distribution:
        _check_same_type(self, other)
        assert isinstance(other, Distribution)
        if other.lower_bounds != self.lower_bounds:
            raise MetricsError("cannot combine distributions with different bucket bounds")
        return other

    def clone(self) -> Distribution:
        return self._trusted(self.lower_bounds, list(self.bucket_counts), self.sum, self.count)

    @classmethod
    def _trusted(
        cls, bounds: tuple[float, ...], counts: list[int], total: float, count: int
    ) -> Distribution:
        # Bounds that came from a Distribution were checked when it was built: checking them
        # again (a pass over every bound) was a few per cent of a probe's CPU, once per clone.
        new = cls.__new__(cls)
        new.lower_bounds, new.bucket_counts, new.sum, new.count = bounds, counts, total, count
        return new

    def add(self, other: object) -> None:
        other = self._check_bounds(other)
        pairs = zip(self.bucket_counts, other.bucket_counts, strict=True)
        self.bucket_counts = [a + b for a, b in pairs]
        self.sum += other.sum
        self.count += other.count

    def subtract(self, prev: object) -> Distribution:
        prev = self._check_bounds(prev)
        counts = [a - b for a, b in zip(self.bucket_counts, prev.bucket_counts, strict=True)]
        return self._trusted(
            self.lower_bounds, counts, self.sum - prev.sum, self.count - prev.count
        )

    def is_reset(self, prev: object) -> bool:
        return isinstance(prev, Distribution) and self.count < prev.count

    def __str__(self) -> str:
        lb = ",".join("-Inf" if b == -math.inf else _format_number(b) for b in self.lower_bounds)
        bc = ",".join(str(n) for n in self.bucket_counts)
        return f"dist:sum:{_format_number(self.sum)}|count:{self.count}|lb:{lb}|bc:{bc}"
