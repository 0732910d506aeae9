"""Log ping: measure a log's append-to-read latency continuously (a port of Akutan's logping).

``Pinger`` appends ping entries through one client and times how long each takes to come back
through a separate reader. ``MemoryLog``, ``FileLog`` and ``EtcdLog`` are the logs it can ping;
anything with ``append``/``read`` (the ``Log`` protocol; :func:`read_with` makes a ``read``)
works. See docs/logping.md.

Usable on its own: nothing here imports the rest of trioprobe but its small leaf modules (the
TLS context and the histogram type). Less used names stay importable from the submodules:
``logs`` (``LogClients``, ``check_log_spec``), ``pinger`` (``GetReplayPosition``,
``new_writer_id``) and ``encoding`` (``Ping``, ``PING_TYPE``, ``WRITER_ID_LEN``,
``encode_ping``, ``decode_ping``).
"""

from .logs import (
    Disconnector,
    Entry,
    EtcdLog,
    FileLog,
    Log,
    LogAppender,
    LogClosedError,
    LogError,
    LogReader,
    LogTruncatedError,
    LogUnavailableError,
    MemoryLog,
    open_log,
    read_with,
)
from .pinger import (
    LogOrderError,
    LogRewoundError,
    Pinger,
    PingerMetrics,
    PingOutcome,
    PingStatus,
    ReaderStalledError,
    latency_distribution,
    quantiles,
)

__all__ = [
    # logs
    "Entry",
    "Log",
    "LogAppender",
    "LogReader",
    "Disconnector",
    "read_with",
    "MemoryLog",
    "FileLog",
    "EtcdLog",
    "open_log",
    "LogError",
    "LogTruncatedError",
    "LogClosedError",
    "LogUnavailableError",
    # pinger
    "Pinger",
    "PingerMetrics",
    "PingOutcome",
    "PingStatus",
    "latency_distribution",
    "quantiles",
    "LogOrderError",
    "LogRewoundError",
    "ReaderStalledError",
]
