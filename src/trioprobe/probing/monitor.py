"""etcd's probing monitor: periodic health and clock-drift warnings, and an SRTT histogram.

etcd 3.4 (``rafthttp/probing_status.go``) runs one monitor per peer and prober. It checks 5 s after
the peer is added, then every 30 s while the peer is healthy and every 5 s while it is not; it
warns on an unhealthy peer and on a clock difference above 1 s, and records the SRTT in a
histogram with buckets ``0.1 ms * 2**k`` (16 of them). One deliberate difference: etcd compares the
*signed* difference (``ClockDiff() > 1s``), so a peer whose clock is ahead of ours is never
reported; :func:`monitor` compares the absolute value.
"""

from __future__ import annotations

import bisect
import logging
from typing import Protocol

import attrs
import trio

from .prober import Status

__all__ = ["RTT_BUCKETS", "RTTHistogram", "SampleSink", "monitor"]

RTT_BUCKETS: tuple[float, ...] = tuple(0.0001 * 2**k for k in range(16))
"""Upper bounds in seconds, 0.1 ms … 3.2768 s: Prometheus' ``ExponentialBuckets(0.0001, 2, 16)``."""

_log = logging.getLogger("trioprobe.probing")


class SampleSink(Protocol):
    """Anything that takes samples: :class:`RTTHistogram`, or ``trioprobe.metrics.Distribution``."""

    def add_sample(self, value: float, /) -> None: ...


@attrs.define
class RTTHistogram:
    """A fixed-bucket histogram of seconds with Prometheus ``le`` semantics.

    Kept here (rather than using ``trioprobe.metrics``) so the probing package stands alone.
    ``counts[i]`` counts samples ``<= bounds[i]`` and above the previous bound; the last entry
    counts the samples above every bound (``+Inf``).
    """

    bounds: tuple[float, ...] = RTT_BUCKETS
    counts: list[int] = attrs.field()
    count: int = 0
    sum: float = 0.0

    @counts.default
    def _zero_counts(self) -> list[int]:
        return [0] * (len(self.bounds) + 1)

    def add_sample(self, value: float, /) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, count)`` pairs as Prometheus exposes them, ending with ``(inf, count)``."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


async def monitor(
    status: Status,
    *,
    name: str | None = None,
    histogram: SampleSink | None = None,
    logger: logging.Logger | None = None,
    first_check: float = 5.0,
    healthy_interval: float = 30.0,
    unhealthy_interval: float = 5.0,
    max_clock_diff: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch ``status`` the way etcd watches its peers; returns when the probe is stopped.

    Each check warns (``logging.WARNING`` on ``logger``, default ``trioprobe.probing``) if the last
    probe failed or if ``|clock_diff| > max_clock_diff``, and records the SRTT into ``histogram``
    (every check, healthy or not, as etcd does). ``name`` labels the messages (default: the id).
    """
    log = logger if logger is not None else _log
    label = name if name is not None else status.probe_id
    task_status.started()
    delay = first_check
    while True:
        with trio.move_on_after(delay):
            await status.wait_stopped()
            return
        if status.health:
            delay = healthy_interval
        else:
            log.warning(
                "prober detected unhealthy status: peer=%s rtt=%.6fs error=%s",
                label,
                status.srtt,
                status.error,
            )
            delay = unhealthy_interval
        if abs(status.clock_diff) > max_clock_diff:
            log.warning(
                "prober found high clock drift: peer=%s clock_diff=%+.6fs rtt=%.6fs",
                label,
                status.clock_diff,
                status.srtt,
            )
        if histogram is not None:
            histogram.add_sample(status.srtt)
