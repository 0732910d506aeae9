"""Hinted handoff: a durable disk queue, a rate limiter and a write replayer.

Usable on its own (it imports nothing else from trioprobe)::

    async with trioprobe.handoff.open_queue("/var/lib/app/hh") as queue:
        replayer = WriteReplayer(queue, send)
        async with trio.open_nursery() as nursery:
            await nursery.start(replayer.run)
            await replayer.write(b"payload")   # durable when it returns; delivered at least once

See ``docs/handoff.md`` for semantics and ``docs/handoff-format.md`` for the file format.
"""

from .errors import (
    HandoffError,
    QueueCloseTimeoutError,
    QueueError,
    QueueFullError,
    QueueIOError,
    QueueLockedError,
    QueueNotOpenError,
    QueueOpenError,
    QueueWriteError,
    RecordRejected,
    ReplayerClosedError,
    SegmentFullError,
    UnsafeQueueDirError,
)
from .inspect import QueueInfo, SegmentInfo, inspect_queue, iter_records
from .limiter import RateLimiter
from .queue import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_SEGMENT_SIZE,
    DEFAULT_MAX_SIZE,
    DiskBackedQueue,
    GiB,
    MiB,
    QueuePosition,
    Record,
    RecoveryReport,
    SyncPolicy,
    TruncatedTail,
    check_private_dir,
    open_queue,
)
from .replayer import (
    DEFAULT_MAX_AGE,
    DEFAULT_PURGE_INTERVAL,
    DEFAULT_RETRY_INTERVAL,
    DEFAULT_RETRY_MAX_INTERVAL,
    ReplayerStats,
    ReplayQueue,
    WriteReplayer,
)

__all__ = [
    # queue
    "open_queue",
    "check_private_dir",
    "DiskBackedQueue",
    "QueuePosition",
    "Record",
    "RecoveryReport",
    "SyncPolicy",
    "TruncatedTail",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_SEGMENT_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "GiB",
    "MiB",
    # offline inspection
    "inspect_queue",
    "iter_records",
    "QueueInfo",
    "SegmentInfo",
    # replay
    "WriteReplayer",
    "ReplayerStats",
    "ReplayQueue",
    "RateLimiter",
    "DEFAULT_RETRY_INTERVAL",
    "DEFAULT_RETRY_MAX_INTERVAL",
    "DEFAULT_MAX_AGE",
    "DEFAULT_PURGE_INTERVAL",
    # errors
    "HandoffError",
    "QueueError",
    "QueueIOError",
    "QueueCloseTimeoutError",
    "QueueNotOpenError",
    "QueueOpenError",
    "QueueFullError",
    "SegmentFullError",
    "QueueLockedError",
    "UnsafeQueueDirError",
    "QueueWriteError",
    "ReplayerClosedError",
    "RecordRejected",
]
