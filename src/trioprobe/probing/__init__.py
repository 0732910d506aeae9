"""HTTP probing with etcd's semantics (``xiang90/probing`` on Trio).

- :data:`health_app` / :func:`serve_health`: the ``{"OK":true,"Now":...}`` health endpoint.
- :func:`open_prober` / :class:`Prober` / :class:`Status`: probe such endpoints, tracking loss,
  smoothed RTT and clock difference.
- :func:`monitor`: etcd's periodic health and clock-drift warnings for one probe.

Usable on its own: nothing here imports the rest of trioprobe, except ``trioprobe.results``
when a results channel is requested.
"""

from .health import DEFAULT_PATH, HealthApp, format_rfc3339_nano, health_app, serve_health
from .monitor import RTT_BUCKETS, RTTHistogram, SampleSink, monitor
from .prober import (
    ALPHA,
    BadHealthReply,
    NotOK,
    ProbeExistsError,
    ProbeFailure,
    ProbeNotFoundError,
    Prober,
    ProbeTimeout,
    ProbingError,
    Status,
    UnexpectedStatus,
    open_prober,
    parse_rfc3339_nano,
)

__all__ = [
    # health endpoint
    "DEFAULT_PATH",
    "HealthApp",
    "health_app",
    "serve_health",
    "format_rfc3339_nano",
    # prober
    "open_prober",
    "Prober",
    "Status",
    "ALPHA",
    "parse_rfc3339_nano",
    # errors
    "ProbingError",
    "ProbeExistsError",
    "ProbeNotFoundError",
    "ProbeFailure",
    "UnexpectedStatus",
    "BadHealthReply",
    "NotOK",
    "ProbeTimeout",
    # monitor
    "monitor",
    "RTTHistogram",
    "RTT_BUCKETS",
    "SampleSink",
]
