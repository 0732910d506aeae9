"""Hinted handoff: a durable disk queue, a rate limiter and a write replayer.

Usable on its own (it imports nothing else from trioprobe)::

    async with trioprobe.handoff.open_queue("/var/lib/app/hh") as queue:
        replayer = WriteReplayer(queue, send)
        async with trio.open_nursery() as nursery:
            await nursery.start(replayer.run)
            await replayer.write(b"payload")   # durable when it returns; delivered at least once

See ``docs/handoff.md`` for semantics and ``docs/handoff-format.md`` for the file format.
"""

from .disk_queue import DiskBackedQueue, QueueOptions, SyncPolicy, open_queue
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
from .inspection import inspect_queue, iter_records
from .limiter import RateLimiter
from .replayer import WriteReplayer

# What users call, construct or catch. The values these return (Record, RecoveryReport,
# QueuePosition, ReplayerStats, QueueInfo...), the defaults and the size units are importable from
# their modules: trioprobe.handoff.disk_queue, .replayer and .inspection.
__all__ = [
    # queue
    "open_queue",
    "QueueOptions",
    "SyncPolicy",
    "DiskBackedQueue",
    # offline inspection
    "inspect_queue",
    "iter_records",
    # replay
    "WriteReplayer",
    "RateLimiter",
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
