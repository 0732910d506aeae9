"""What a pinger reports: its counters and latency histograms, and how each ping ended.

These are plain values the :class:`~trioprobe.logping.pinger.Pinger` fills in and a caller reads
(the ``logping`` probe type turns them into results and metrics); they are apart from the
Pinger's state machine so each reads on its own.
"""

from __future__ import annotations

import enum

import attrs

from .._histogram import Distribution

__all__ = [
    "PingOutcome",
    "PingStatus",
    "PingerMetrics",
    "QUANTILES",
    "latency_distribution",
    "quantiles",
]

QUANTILES = (0.5, 0.9, 0.95, 0.99)


def latency_distribution() -> Distribution:
    """Buckets for latencies in seconds: 0, then 10 µs growing by 10% per bucket up to ~15 s.

    The 10% growth bounds a percentile's error to about 10% of its value, from a 10 µs in-memory
    append to a multi-second stall, in 152 buckets.
    """
    return Distribution.exponential(base=1.1, scale=1e-5, count=150)


def quantiles(dist: Distribution) -> dict[float, float]:
    """p50/p90/p95/p99 of ``dist`` (NaN when it has no samples)."""
    return {q: dist.percentile(q) for q in QUANTILES}


@attrs.define
class PingerMetrics:
    """What the pinger counts. Counters only grow; ``last_applied`` is a gauge.

    ``pings_started == pings_succeeded + pings_aborted + pings_append_failed`` plus at most the one
    ping in flight: a ping outstanding when its round ends (a restart) counts as aborted.
    """

    pings_started: int = 0
    pings_succeeded: int = 0
    pings_aborted: int = 0
    pings_append_failed: int = 0
    appends_succeeded: int = 0
    appends_failed: int = 0
    disconnects: int = 0
    restarts: int = 0
    #: Restarts because an append's index went backwards (the log lost data).
    rewinds: int = 0
    #: Restarts because the reader returned nothing while appends succeeded.
    stalls: int = 0
    replay_errors: int = 0
    last_applied: int = 0
    ping_latency: Distribution = attrs.field(factory=latency_distribution)
    append_latency: Distribution = attrs.field(factory=latency_distribution)

    def counters(self) -> dict[str, int]:
        return {
            "pings_started": self.pings_started,
            "pings_succeeded": self.pings_succeeded,
            "pings_aborted": self.pings_aborted,
            "pings_append_failed": self.pings_append_failed,
            "appends_succeeded": self.appends_succeeded,
            "appends_failed": self.appends_failed,
            "disconnects": self.disconnects,
            "restarts": self.restarts,
            "rewinds": self.rewinds,
            "stalls": self.stalls,
            "replay_errors": self.replay_errors,
        }


class PingStatus(enum.Enum):
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    APPEND_FAILED = "append_failed"


@attrs.frozen
class PingOutcome:
    """How one ping ended; handed to ``on_ping`` (the probe adapter turns it into a ProbeResult)."""

    seq: int
    status: PingStatus
    latency: float  # append -> read, seconds; only meaningful when SUCCEEDED
    error: str | None = None
