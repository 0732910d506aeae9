"""Log ping: measure a log's append-to-read latency continuously (a port of Akutan's logping).

``Pinger`` appends ping entries through one client and times how long each takes to come back
through a separate reader. ``MemoryLog``, ``FileLog`` and ``EtcdLog`` are the logs it can ping;
anything with ``append``/``read`` (the ``Log`` protocol) works. See docs/logping.md.
"""

from .encoding import PING_TYPE, WRITER_ID_LEN, Ping, decode_ping, encode_ping
from .logs import (
    Disconnector,
    Entry,
    EtcdLog,
    FileLog,
    Log,
    LogAppender,
    LogClients,
    LogClosedError,
    LogError,
    LogReader,
    LogTruncatedError,
    LogUnavailableError,
    MemoryLog,
    check_log_spec,
    open_log,
)
from .pinger import (
    GetReplayPosition,
    LogOrderError,
    LogRewoundError,
    Pinger,
    PingerMetrics,
    PingOutcome,
    PingStatus,
    ReaderStalledError,
    latency_distribution,
    new_writer_id,
    quantiles,
)

__all__ = [
    # logs
    "Entry",
    "Log",
    "LogAppender",
    "LogReader",
    "Disconnector",
    "MemoryLog",
    "FileLog",
    "EtcdLog",
    "LogError",
    "LogTruncatedError",
    "LogClosedError",
    "LogUnavailableError",
    "LogClients",
    "open_log",
    "check_log_spec",
    # pinger
    "Pinger",
    "PingerMetrics",
    "PingOutcome",
    "PingStatus",
    "latency_distribution",
    "quantiles",
    "GetReplayPosition",
    "LogOrderError",
    "LogRewoundError",
    "ReaderStalledError",
    "new_writer_id",
    # encoding
    "Ping",
    "PING_TYPE",
    "WRITER_ID_LEN",
    "encode_ping",
    "decode_ping",
]
