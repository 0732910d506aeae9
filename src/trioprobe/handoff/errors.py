"""The handoff package's exceptions: one base class, one subclass per thing that can go wrong.

Every message names the queue directory (or file) involved, so a log line is enough to act on.
"""

from __future__ import annotations

__all__ = [
    "HandoffError",
    "QueueError",
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


class HandoffError(Exception):
    """Base class of every error raised by :mod:`trioprobe.handoff`."""


class QueueError(HandoffError):
    """Something about a :class:`~trioprobe.handoff.DiskBackedQueue` went wrong."""


class QueueNotOpenError(QueueError):
    """The queue was used outside its ``async with open_queue(...)`` block."""


class QueueOpenError(QueueError):
    """An operation that needs a closed queue (``remove()``) was called on an open one."""


class QueueFullError(QueueError):
    """Appending would take the queue over its ``max_size``; nothing was written."""


class SegmentFullError(QueueError):
    """A single record is larger than a whole segment can hold; nothing was written."""


class QueueLockedError(QueueError):
    """Another process (or another open queue in this one) already holds the directory."""


class UnsafeQueueDirError(QueueError):
    """The queue directory exists but another user owns it, or others may write to it.

    Such a directory (say one pre-created under a shared ``/tmp``) would let another user read
    the queued data, or plant and swap segment files; the queue refuses to open it.
    """


class QueueWriteError(QueueError):
    """Writing or fsyncing a segment failed (disk full, I/O error); the records were not stored."""


class ReplayerClosedError(HandoffError):
    """The write replayer's queue is closed, so nothing more can be queued."""


class RecordRejected(HandoffError):
    """Raised by a replayer's ``send`` callable when the receiver will never accept this record.

    The replayer then counts it in ``dropped_records`` and moves on, instead of retrying a poison
    record forever (e.g. InfluxDB answering 400 to a malformed line).
    """
