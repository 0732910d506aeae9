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
    "QueueIOError",
    "QueueCloseTimeoutError",
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


class QueueIOError(QueueError):
    """File I/O in the queue directory failed outside an append: opening (creating the directory,
    lock file, first segment or head file), reading a segment, saving the head position, trimming
    or rolling a segment, or closing. Disk full (``ENOSPC``) is the usual cause.

    The message names the directory and what was being done; the ``OSError`` is the
    ``__cause__`` (and ``errno`` is copied here). No record is lost by such a failure: appended
    records stay on disk, and a head that could not be saved only means records may be read
    again after a restart.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        #: The failed call's errno (``errno.ENOSPC`` for a full disk), if it had one.
        self.errno = errno


class QueueCloseTimeoutError(QueueError):
    """``aclose()`` could not finish within its ``close_timeout`` (a write, read or fsync in a
    worker thread is hung, e.g. on a dead disk). The queue is closed for this process's use; the
    files (and the directory lock) are released when the hung call returns."""


class ReplayerClosedError(HandoffError):
    """The write replayer's queue is closed, so nothing more can be queued."""


class RecordRejected(HandoffError):
    """Raised by a replayer's ``send`` callable when the receiver will never accept this record.

    The replayer then counts it in ``dropped_records`` and moves on, instead of retrying a poison
    record forever (e.g. InfluxDB answering 400 to a malformed line).
    """
