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
    """Writing or fsyncing a segment failed (disk full, I/O error).

    Raised only for a call whose records were not all confirmed durable. ``stored`` counts the
    leading records of that call (``append_many``) fsynced before the failure: those are kept
    and will be delivered. The rest were cut off the segment again; but if that cut failed too,
    one may still turn up and be delivered. So read it as "probably not stored", never as
    "certainly not" (delivery is at least once, not at most once).
    """

    def __init__(self, message: str, stored: int = 0) -> None:
        super().__init__(message)
        #: How many of the call's records (a prefix) were stored before the failure.
        self.stored = stored


class ReplayerClosedError(HandoffError):
    """The write replayer's queue is closed, so nothing more can be queued."""


class RecordRejected(HandoffError):
    """Raised by a replayer's ``send`` callable when the receiver will never accept this record.

    The replayer then counts it in ``dropped_records`` and moves on, instead of retrying a poison
    record forever (e.g. InfluxDB answering 400 to a malformed line).
    """
