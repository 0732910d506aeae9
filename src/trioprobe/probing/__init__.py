"""HTTP probing with etcd's semantics (``xiang90/probing`` on Trio).

- :data:`health_app` / :func:`serve_health`: the ``{"OK":true,"Now":...}`` health endpoint.
- :func:`open_prober` / :class:`Prober` / :class:`Status`: probe such endpoints, tracking loss,
  smoothed RTT and clock difference; :class:`ProbeRecord`: one probe, for a records channel.
- :func:`monitor`: etcd's periodic health and clock-drift warnings for one probe.

Usable on its own: nothing here imports the rest of trioprobe but its small leaf modules (the
HTTP server host, TLS context, request trace, histogram). Less used names stay importable from
the submodules: ``health`` (``DEFAULT_PATH``, ``HealthApp``, ``format_rfc3339_nano``), ``prober``
(``ALPHA``, ``parse_rfc3339_nano``) and ``monitor`` (``RTT_BUCKETS``, ``SampleSink``).
"""

from .health import health_app, serve_health
from .monitor import monitor, rtt_histogram
from .prober import (
    BadHealthReply,
    NotOK,
    ProbeExistsError,
    ProbeFailure,
    ProbeNotFoundError,
    Prober,
    ProbeRecord,
    ProbeTimeout,
    ProbingError,
    Status,
    UnexpectedStatus,
    open_prober,
)

__all__ = [
    # health endpoint
    "health_app",
    "serve_health",
    # prober
    "open_prober",
    "Prober",
    "Status",
    "ProbeRecord",
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
    "rtt_histogram",
]
