"""etcd's probing monitor: periodic health and clock-drift warnings, and an SRTT histogram.

etcd 3.4 (``rafthttp/probing_status.go``) runs one monitor per peer and prober. It checks 5 s after
the peer is added, then every 30 s while the peer is healthy and every 5 s while it is not; it
warns on an unhealthy peer and on a clock difference above 1 s, and records the SRTT in a
histogram with buckets ``0.1 ms * 2**k`` (16 of them). One deliberate difference: etcd compares the
*signed* difference (``ClockDiff() > 1s``), so a peer whose clock is ahead of ours is never
reported; :func:`monitor` compares the absolute value.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from .._histogram import Distribution
from .prober import Status

__all__ = ["RTT_BUCKETS", "SampleSink", "monitor", "rtt_histogram"]

RTT_BUCKETS: tuple[float, ...] = tuple(0.0001 * 2**k for k in range(16))
"""Upper bounds in seconds, 0.1 ms … 3.2768 s: Prometheus' ``ExponentialBuckets(0.0001, 2, 16)``."""

_log = logging.getLogger("trioprobe.probing")


class SampleSink(Protocol):
    """Anything that takes samples, such as a ``Distribution`` (:func:`rtt_histogram`)."""

    def add_sample(self, value: float, /) -> None: ...


def rtt_histogram() -> Distribution:
    """An empty histogram for :func:`monitor` with etcd's SRTT buckets (:data:`RTT_BUCKETS`).

    trioprobe's one histogram type, so it adds, subtracts and prints like any metric value.
    Its buckets count by lower bound: ``[0, 0.1 ms)``, ``[0.1 ms, 0.2 ms)``, ...,
    ``[3.2768 s, inf)`` (Prometheus' buckets are ``le``; the two differ only for a sample exactly
    on a bound).
    """
    return Distribution.explicit((0.0, *RTT_BUCKETS))


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
