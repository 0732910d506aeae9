"""``DiskBackedQueue``: a bounded, durable, segmented FIFO of byte records.

The queue combines log and queue semantics, as InfluxDB's hinted-handoff queue does: records are
appended at the tail, read at the head, and the head only moves on ``advance()``, so a reader can
re-read the head record until it has been delivered. Records live in numbered segment files; a
segment is deleted once the head has moved past all of it. The format is ours (see
``docs/handoff-format.md``): every segment has a versioned header and every record a CRC32C, so
recovery after a crash can tell a torn tail from good data, and corruption costs the damaged record
only, never the whole segment (the reference deletes a segment whose footer it cannot seek to).

Durability. An ``append`` returns only once its record is fsynced. With ``sync="group"`` (the
default) appends that arrive while a write is in flight are batched into the next write, which
costs one ``trio.to_thread`` hop and one fsync for the whole batch; ``sync="record"`` fsyncs every
record on its own. All blocking file I/O runs in worker threads, so the event loop never stalls on
the disk.

The head pointer is persisted lazily (every ``head_sync_records`` advances, every
``head_sync_interval`` seconds, when a segment is trimmed and on close): delivery through the queue
is at least once, so after a crash up to that many records can be read again, but never lost.

One task should consume (``current``/``advance``/``purge_older_than``) at a time; any number of
tasks may ``append`` concurrently.
"""

from __future__ import annotations

import fcntl
import inspect
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from functools import partial, update_wrapper
from typing import Concatenate, Literal, ParamSpec

import attrs
import outcome
import trio

from ._commit import BatchProgress as _BatchProgress
from ._commit import GroupCommit, Pending
from ._format import (
    HEAD_FILE,
    HEADER_SIZE,
    LOCK_FILE,
    RECORD_HEADER_SIZE,
    Parse,
    encode_head,
    encode_record,
    encode_segment_header,
    parse_record,
    resync,
)
from ._recovery import MAX_LEN as _MAX_LEN
from ._recovery import RecoveryReport, TruncatedTail, recover
from ._recovery import Segment as _Segment
from ._recovery import fsync_dir as _fsync_dir
from .errors import (
    QueueCloseTimeoutError,
    QueueFullError,
    QueueIOError,
    QueueLockedError,
    QueueNotOpenError,
    QueueOpenError,
    QueueWriteError,
    SegmentFullError,
    UnsafeQueueDirError,
)

__all__ = [
    "GiB",
    "MiB",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_SEGMENT_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "DiskBackedQueue",
    "QueueOptions",
    "QueuePosition",
    "Record",
    "RecoveryReport",
    "SyncPolicy",
    "TruncatedTail",
    "check_private_dir",
    "open_queue",
]

logger = logging.getLogger("trioprobe.handoff")

GiB = 1 << 30
MiB = 1 << 20
DEFAULT_MAX_SIZE = 10 * GiB
DEFAULT_MAX_SEGMENT_SIZE = 10 * MiB
#: Seconds ``aclose`` waits for the write, read or fsync in flight and its own final save.
DEFAULT_CLOSE_TIMEOUT = 30.0
#: How much of the head segment one read brings into memory.
READ_CHUNK = 4 * MiB

#: ``QueueOptions.sync``: ``"group"`` shares an fsync among concurrent appends, ``"record"``
#: fsyncs each record on its own.
SyncPolicy = Literal["group", "record"]


def _check_sync(_: object, __: object, sync: str) -> None:
    if sync not in ("group", "record"):
        raise ValueError(f"sync must be 'group' or 'record', not {sync!r}")


def _check_segment_size(_: object, __: object, size: int) -> None:
    if size <= HEADER_SIZE + RECORD_HEADER_SIZE:
        raise ValueError(f"max_segment_size {size} is too small to hold a record")


@attrs.frozen(kw_only=True)
class QueueOptions:
    """How a queue sizes, syncs and checks its files: the one list of a queue's options.

    :func:`open_queue` takes them as keywords (``open_queue(dir, max_size=...)``), and
    :class:`DiskBackedQueue` as this value, so each option is declared, defaulted and checked
    here only.
    """

    #: Bytes the queue may take on disk (record framing included; a new segment's 16-byte header
    #: may go over by that much). An append beyond it raises :class:`QueueFullError`.
    max_size: int = DEFAULT_MAX_SIZE
    #: The size at which a new segment starts. A record that cannot fit in an empty segment is
    #: refused with :class:`SegmentFullError`.
    max_segment_size: int = attrs.field(
        default=DEFAULT_MAX_SEGMENT_SIZE, validator=_check_segment_size
    )
    #: ``"group"``: appends that arrive while a write is in flight share the next fsync;
    #: ``"record"``: every record is fsynced on its own.
    sync: SyncPolicy = attrs.field(default="group", validator=_check_sync)
    #: Check every record of every segment on open (otherwise only the tail segment is scanned,
    #: and the others are checked record by record as they are read).
    verify: bool = False
    #: The head position is saved after this many advances...
    head_sync_records: int = 4096
    #: ...or this many seconds, whichever comes first (and when a segment is trimmed, and on
    #: close): after a crash, at most that much is read again.
    head_sync_interval: float = 1.0
    #: Stamps records for ``purge_older_than`` (seconds; ``None`` means ``time.time``).
    wall_clock: Callable[[], float] | None = None
    #: Seconds ``aclose`` waits for the call in flight (see :meth:`DiskBackedQueue.aclose`).
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT


@attrs.frozen
class QueuePosition:
    """Where the head (next record to read) and the tail (end of durable data) are."""

    head_segment: int
    head_offset: int
    tail_segment: int
    tail_offset: int

    def __str__(self) -> str:
        return (
            f"head={self.head_segment}:{self.head_offset} "
            f"tail={self.tail_segment}:{self.tail_offset}"
        )


@attrs.frozen
class Record:
    """The head record and where it lives."""

    data: bytes
    #: Wall-clock append time, nanoseconds since the epoch (what ``purge_older_than`` compares).
    timestamp_ns: int
    segment: int
    offset: int

    @property
    def timestamp(self) -> float:
        return self.timestamp_ns / 1e9


def default_queue_dir(name: str) -> str:
    """A queue directory for ``name`` under this user's default root in the system's temporary
    folder (``<tmp>/trioprobe-handoff-<uid>/<name>``, ``name`` made file-name safe).

    Per user, so two users' queues never share (or fight over) one directory. Call
    :func:`prepare_default_root` (blocking: in a worker thread) before opening a queue there.
    """
    return os.path.join(_default_root(), re.sub(r"[^A-Za-z0-9_.-]", "_", name))


def _default_root() -> str:
    return os.path.join(tempfile.gettempdir(), f"trioprobe-handoff-{os.getuid()}")


def prepare_default_root() -> None:
    """Create the default queues' parent privately, and refuse one another user planted.

    The queue checks its own directory, but whoever owns the parent could rename it away and
    put their own in its place; so the parent of the default location is checked too.
    """
    root = _default_root()
    with suppress(FileExistsError):
        os.mkdir(root, 0o700)
    check_private_dir(root)


def check_private_dir(path: str) -> None:
    """Raise :class:`UnsafeQueueDirError` unless ``path`` is this user's and only theirs to write.

    The queue trusts every file in its directory, so a directory another user owns, or may
    write to, would let that user read queued data or plant and swap segment files.
    """
    st = os.stat(path)
    uid = os.getuid()
    if st.st_uid != uid:
        raise UnsafeQueueDirError(
            f"queue directory {path} is owned by uid {st.st_uid}, not by this user "
            f"(uid {uid}); refusing to use it"
        )
    if st.st_mode & 0o022:
        raise UnsafeQueueDirError(
            f"queue directory {path} is writable by group or others "
            f"(mode {st.st_mode & 0o777:o}); refusing to use it (chmod go-w {path})"
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class DiskBackedQueue:
    """A durable FIFO of byte records in ``directory``. Use :func:`open_queue` to open one.

    ``options`` (:class:`QueueOptions`) sets its size bounds, sync policy and checks.
    """

    def __init__(
        self, directory: str | os.PathLike[str], options: QueueOptions | None = None
    ) -> None:
        self.directory = os.fspath(directory)
        self.options = QueueOptions() if options is None else options
        #: Set when ``aclose`` gave up waiting for a hung call: the task that finishes it closes
        #: the files (see ``_release_late``).
        self._late_close = False
        #: What the last ``open`` found and repaired.
        self.recovery = RecoveryReport()
        #: Corrupt records skipped since open (found on open or while reading).
        self.corrupt_records = 0
        self._open = False
        self._segments: list[_Segment] = []
        self._usage = 0
        self._last_modified = 0.0
        self._lock_fd = -1
        # Writer state (_w_*): touched only by the write in flight (in its worker thread) and,
        # while writes are paused, by the holder of _write_lock (close, purge's roll).
        self._write_lock = trio.Lock()
        self._commit = self._new_commit()
        #: Held around the reader's file I/O, so close never closes an fd a thread is using.
        self._io_lock = trio.Lock()
        self._w_fd = -1
        self._w_id = 0
        self._w_size = 0
        # Reader state.
        self._r_fd = -1
        self._r_id = 0
        self._rbuf = b""
        self._rbase = 0
        self._hpos = HEADER_SIZE
        self._cur: Record | None = None
        self._advanced = 0
        self._last_head_sync = 0.0
        self._persisted_head: tuple[int, int] | None = None

    def _new_commit(self) -> GroupCommit:
        return GroupCommit(self._write_batch, self._apply_batch, self._write_error, self._idle)

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<DiskBackedQueue {self.directory!r} {state}>"

    # -- open and close ---------------------------------------------------------------------
    async def open(self) -> None:
        """Open (creating the directory with mode 0700 if needed) and recover after a crash.

        An existing directory must belong to this user and not be writable by group or others
        (:class:`UnsafeQueueDirError` otherwise).
        """
        if self._open:
            return
        with self._io_errors("opening"):
            await trio.to_thread.run_sync(self._open_sync)
        # A fresh group commit: a closed one refuses to write, and this may be another run.
        self._commit = self._new_commit()
        self._open = True
        self._last_head_sync = trio.current_time()
        if not self.recovery.clean:
            logger.warning("handoff queue %s recovered: %s", self.directory, self.recovery)

    async def aclose(self) -> None:
        """Wait for the write in flight, persist the head and release the directory.

        Shielded from cancellation (the directory lock and the head position must not be left
        behind), but bounded: if the write, read or fsync in flight and the final head save do
        not finish within ``close_timeout`` seconds (a hung disk), the queue is closed for use
        at once and :class:`QueueCloseTimeoutError` is raised; the files and the directory lock
        are then released by the hung call's task (or thread) when it returns.
        """
        if not self._open:
            return
        in_thread = False
        timeout = self.options.close_timeout
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + timeout
            async with self._write_lock, self._commit.paused():
                self._mark_closed()
                # The reader's file I/O in flight finishes first (its fd is closed here).
                async with self._io_lock:
                    in_thread = True
                    with self._io_errors("closing"):
                        # abandon_on_cancel: if the timeout hits, the thread finishes the close
                        # by itself (nothing else touches the files once the queue is closed).
                        await trio.to_thread.run_sync(self._close_sync, abandon_on_cancel=True)
        if scope.cancelled_caught:
            self._mark_closed()
            if not in_thread:
                self._late_close = True
                # In case the hung call returned just now and nobody is left to close.
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 1.0):
                    await self._release_late()
            logger.error(
                "handoff queue %s: close did not finish within %ss (hung disk?); files are "
                "released when the hung call returns",
                self.directory,
                timeout,
            )
            raise QueueCloseTimeoutError(
                f"closing queue {self.directory} did not finish within {timeout}s "
                "(a write, read or fsync is hung); its files and lock are released when it returns"
            )

    def _mark_closed(self) -> None:
        """Refuse new use and fail the appends no writer has taken yet."""
        self._open = False
        self._commit.fail_pending(lambda: QueueNotOpenError(f"queue {self.directory} was closed"))

    async def _release_late(self) -> None:
        """After ``aclose`` timed out: the last task to leave the locks closes the files."""
        if self._late_close and not self._files_busy():
            self._late_close = False
            try:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._close_sync, abandon_on_cancel=True)
            except OSError as exc:
                # This task's own operation succeeded; the close's failure is only logged.
                logger.error("handoff queue %s: late close failed: %s", self.directory, exc)

    @asynccontextmanager
    async def _reader_io(self, what: str) -> AsyncIterator[None]:
        """Hold the reader's I/O lock on an open queue, with I/O errors made queue errors."""
        try:
            async with self._io_lock:
                self._check_open()
                with self._io_errors(what):
                    yield
        finally:
            await self._release_late()

    @contextmanager
    def _io_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise QueueIOError(f"{what} queue {self.directory} failed: {exc}", exc.errno) from exc

    def remove(self) -> None:
        """Delete the queue directory and everything in it. Only allowed once closed."""
        if self._open:
            raise QueueOpenError(f"queue {self.directory} is open: close it before remove()")
        shutil.rmtree(self.directory, ignore_errors=False)

    def _check_open(self) -> None:
        if not self._open:
            raise QueueNotOpenError(f"queue {self.directory} is not open")

    def _open_sync(self) -> None:
        d = self.directory
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        # Also after creating it: exist_ok lets another user's directory slip in between.
        check_private_dir(d)
        lock_fd = os.open(os.path.join(d, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise QueueLockedError(
                f"queue {d} is already open (by this or another process)"
            ) from None
        try:
            self._recover(d)
        except BaseException:
            os.close(lock_fd)
            self._close_fds()
            raise
        self._lock_fd = lock_fd

    def _recover(self, d: str) -> None:
        found = recover(
            d,
            verify=self.options.verify,
            create_segment=self._create_segment_sync,
            write_head=self._write_head_sync,
            rewrite=self._rewrite_sync,
        )
        segments = found.segments
        self._segments = segments
        self._usage = sum(s.size for s in segments)
        self._hpos = found.head_offset
        self._persisted_head = found.persisted_head
        tail = segments[-1]
        self._w_fd = os.open(tail.path, os.O_WRONLY | os.O_APPEND)
        self._w_id = tail.id
        self._w_size = tail.size
        self._last_modified = os.stat(tail.path).st_mtime
        self.corrupt_records = found.report.corrupt_records
        self.recovery = found.report

    def _rewrite_sync(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _create_segment_sync(self, seg_id: int) -> str:
        """Create segment ``seg_id`` atomically: it never exists without its whole header."""
        path = os.path.join(self.directory, str(seg_id))
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, encode_segment_header())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        _fsync_dir(self.directory)
        return path

    def _close_fds(self) -> None:
        for name in ("_w_fd", "_r_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def _close_sync(self) -> None:
        try:
            if self._segments:
                self._write_head_sync(self._segments[0].id, self._hpos)
        finally:
            self._close_fds()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
            self._rbuf = b""
            self._cur = None

    # -- appending --------------------------------------------------------------------------
    def _now_ns(self) -> int:
        wall_clock = self.options.wall_clock
        if wall_clock is None:
            return time.time_ns()
        return int(wall_clock() * 1e9)

    async def append(self, data: bytes) -> None:
        """Append one record; return once it is durable (fsynced) under the sync policy.

        If the call is cancelled, the record may or may not have been stored.
        """
        # The one-record path is append_many's without the loops: it runs once per record
        # when many tasks append one record each (the group commit benchmark).
        if not self._open:
            self._check_open()
        options = self.options
        if HEADER_SIZE + RECORD_HEADER_SIZE + len(data) > options.max_segment_size:
            self._check_fits(len(data))
        clock = options.wall_clock
        rec = encode_record(data, time.time_ns() if clock is None else int(clock() * 1e9))
        p = Pending([rec], len(rec))
        self._reserve(p, 1)
        # Awaited here, not through a helper coroutine: every frame between the appender and
        # the park is resumed once per record, and with 100 appenders that is the loop's work.
        await self._commit.commit(p)
        if self._late_close or p.error is not None:
            await self._after_commit(p)

    async def append_many(self, records: Sequence[bytes]) -> None:
        """Append ``records`` in order, in one batch; return once all of them are durable.

        For a producer that has many records at once: they share one fsync (in group mode)
        without needing one task per record. Not atomic: after a crash a prefix may be present,
        and a :class:`QueueWriteError` says in ``stored`` how many (a prefix) were stored.
        Nothing is written if any record is too large or the queue cannot take them all.
        """
        self._check_open()
        for data in records:
            self._check_fits(len(data))
        now = self._now_ns()
        encoded = [encode_record(data, now) for data in records]
        p = Pending(encoded, sum(map(len, encoded)))
        self._reserve(p, len(records))
        await self._commit.commit(p)
        await self._after_commit(p)

    def _check_fits(self, size: int) -> None:
        if HEADER_SIZE + RECORD_HEADER_SIZE + size > self.options.max_segment_size:
            raise SegmentFullError(
                f"record of {size} bytes does not fit in a segment of "
                f"{self.options.max_segment_size} bytes (queue {self.directory})"
            )

    def _reserve(self, p: Pending, n: int) -> None:
        """Refuse ``p`` (``n`` records, encoded before the batch is formed: the write in
        flight only joins bytes) if the queue cannot take it."""
        used = self._usage + self._commit.reserved
        if used + p.size > self.options.max_size:
            raise QueueFullError(
                f"queue {self.directory} is full: {used} of {self.options.max_size} bytes "
                f"used, {n} record(s) need {p.size}"
            )

    async def _after_commit(self, p: Pending) -> None:
        if self._late_close:
            await self._release_late()
        if p.error is not None:
            raise p.error

    def _files_busy(self) -> bool:
        """Whether a write, a reader's file I/O or a holder of the writer's files is active."""
        return self._write_lock.locked() or self._io_lock.locked() or self._commit.busy

    def _idle(self, woke: bool) -> None:
        """After a write (event loop): if close gave up on it and no appender is left to
        finish the close (``woke`` is False), finish it in a thread now."""
        if woke or not self._late_close or self._files_busy():
            return
        self._late_close = False

        def report(result: outcome.Outcome[None]) -> None:
            if isinstance(result, outcome.Error):
                logger.error(
                    "handoff queue %s: late close failed: %s", self.directory, result.error
                )

        trio.lowlevel.start_thread_soon(self._close_sync, report)

    def _write_error(self, exc: BaseException, stored: int, total: int) -> QueueWriteError:
        what = str(exc) if isinstance(exc, OSError) else repr(exc)
        note = f"; the first {stored} of these {total} records were stored" if stored else ""
        error = QueueWriteError(f"writing to queue {self.directory} failed: {what}{note}", stored)
        error.__cause__ = exc
        return error

    def _apply_batch(self, progress: _BatchProgress) -> None:
        self._last_modified = time.time()
        self._apply(progress)

    def _apply(self, progress: _BatchProgress) -> None:
        by_id = {s.id: s for s in self._segments}
        for seg_id in progress.created:
            if seg_id not in by_id:
                seg = _Segment(seg_id, os.path.join(self.directory, str(seg_id)), HEADER_SIZE)
                self._segments.append(seg)
                by_id[seg_id] = seg
                self._usage += HEADER_SIZE
        for seg_id, size in progress.sizes:
            seg = by_id[seg_id]
            self._usage += size - seg.size
            seg.size = size

    def _write_batch(self, records: list[bytes], progress: _BatchProgress) -> None:
        """Worker thread: write and fsync ``records`` to the tail, rolling segments as needed."""
        options = self.options  # one value for the whole batch
        chunk: list[bytes] = []
        chunk_size = 0

        def flush() -> None:
            nonlocal chunk, chunk_size
            if not chunk:
                return
            try:
                _write_all(self._w_fd, b"".join(chunk))
                _fdatasync(self._w_fd)
            except OSError:
                # Cut a partial write off, so the next append does not land after garbage.
                with suppress(OSError):
                    os.ftruncate(self._w_fd, self._w_size)
                raise
            self._w_size += chunk_size
            progress.sizes.append((self._w_id, self._w_size))
            progress.written += len(chunk)
            chunk, chunk_size = [], 0

        for rec in records:
            end = self._w_size + chunk_size
            if end + len(rec) > options.max_segment_size and end > HEADER_SIZE:
                flush()
                self._roll_sync(progress)
            chunk.append(rec)
            chunk_size += len(rec)
            if options.sync == "record":
                flush()
        flush()

    # -- reading ----------------------------------------------------------------------------
    async def current(self) -> bytes | None:
        """The head record's payload, or ``None`` when there is nothing to read."""
        rec = await self.current_record()
        return None if rec is None else rec.data

    async def current_record(self) -> Record | None:
        """The head record with its append time and position, or ``None``."""
        self._check_open()
        if self._cur is None:
            self._cur = await self._load_head()
        return self._cur

    async def advance(self) -> bool:
        """Move the head past the current record; ``False`` if there was none."""
        rec = await self.current_record()
        if rec is None:
            return False
        self._hpos = rec.offset + RECORD_HEADER_SIZE + len(rec.data)
        self._cur = None
        self._advanced += 1
        if self._hpos >= self._segments[0].size and len(self._segments) > 1:
            await self._trim_head()
        elif (
            self._advanced >= self.options.head_sync_records
            or trio.current_time() - self._last_head_sync >= self.options.head_sync_interval
        ):
            await self._persist_head()
        return True

    async def _load_head(self) -> Record | None:
        while True:
            seg = self._segments[0]
            if self._hpos >= seg.size:
                if len(self._segments) > 1:
                    await self._trim_head()
                    continue
                return None
            if self._r_id != seg.id:
                await self._open_reader(seg)
            rel = self._hpos - self._rbase
            if not 0 <= rel <= len(self._rbuf):
                self._rbuf, self._rbase, rel = b"", self._hpos, 0
            status, length, ts = parse_record(self._rbuf, rel, _MAX_LEN)
            if status is Parse.OK:
                start = rel + RECORD_HEADER_SIZE
                return Record(bytes(self._rbuf[start : start + length]), ts, seg.id, self._hpos)
            loaded_end = self._rbase + len(self._rbuf)
            if loaded_end < seg.size:
                if status is Parse.BAD:
                    stop = seg.size  # resynchronising needs everything after the bad record
                else:
                    need = RECORD_HEADER_SIZE + length
                    stop = min(seg.size, self._hpos + max(READ_CHUNK, need))
                await self._fill(self._hpos, stop)
                continue
            # In a thread: a corrupt region can be megabytes of candidates to try, and the
            # event loop must not wait for that (the buffer is immutable bytes, safe to share).
            nxt = await trio.to_thread.run_sync(resync, self._rbuf, rel, _MAX_LEN)
            self.corrupt_records += 1
            new_pos = seg.size if nxt is None else self._rbase + nxt
            logger.warning(
                "handoff queue %s: corrupt record at segment %d offset %d skipped (%d bytes)",
                self.directory,
                seg.id,
                self._hpos,
                new_pos - self._hpos,
            )
            self._hpos = new_pos

    async def _open_reader(self, seg: _Segment) -> None:
        async with self._reader_io("reading"):
            old, self._r_fd, self._r_id = self._r_fd, -1, 0
            # Shielded: the old fd is already handed over, and a pending cancel would make
            # run_sync raise before the thread closes it (and the new fd would be lost).
            with trio.CancelScope(shield=True):
                self._r_fd = await trio.to_thread.run_sync(_swap_reader, old, seg.path)
            self._r_id = seg.id
            self._rbuf, self._rbase = b"", self._hpos

    async def _fill(self, start: int, stop: int) -> None:
        fd = self._r_fd
        async with self._reader_io("reading"):
            self._rbuf = await trio.to_thread.run_sync(os.pread, fd, stop - start, start)
        self._rbase = start

    async def _trim_head(self) -> None:
        """Drop the fully read head segment: persist the new head first, then unlink."""
        async with self._reader_io("trimming a segment of"):
            old = self._segments.pop(0)
            self._hpos = HEADER_SIZE
            self._cur = None
            r_fd = self._r_fd if self._r_id == old.id else -1
            if r_fd >= 0:
                self._r_fd, self._r_id, self._rbuf = -1, 0, b""
            new_head = (self._segments[0].id, HEADER_SIZE)
            # Shielded: the segment has left the list already, so the unlink (a short, bounded
            # hop) must run even if a cancel is pending, or the file and its usage would leak.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._trim_sync, old.path, r_fd, new_head)
                self._usage -= old.size
                self._mark_head_persisted(new_head)

    def _trim_sync(self, path: str, r_fd: int, head: tuple[int, int]) -> None:
        if r_fd >= 0:
            os.close(r_fd)
        self._write_head_sync(*head)
        os.unlink(path)
        _fsync_dir(self.directory)

    def _write_head_sync(self, segment: int, offset: int, *, durable: bool = True) -> None:
        """Replace the head file atomically (write a temp file, rename it over).

        ``durable=False`` skips the fsync: the periodic saves only bound how much is re-read
        after a crash. If a power loss leaves an old or broken head file, the queue reads from
        an earlier record (or the first segment) again: more duplicates, never a lost record.
        """
        path = os.path.join(self.directory, HEAD_FILE)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, encode_head(segment, offset))
            if durable:
                _fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)

    def _mark_head_persisted(self, head: tuple[int, int]) -> None:
        self._persisted_head = head
        self._advanced = 0
        self._last_head_sync = trio.current_time()

    async def _persist_head(self, *, durable: bool = False) -> None:
        head = (self._segments[0].id, self._hpos)
        if durable or head != self._persisted_head:
            async with self._reader_io("saving the head position of"):
                await trio.to_thread.run_sync(
                    partial(self._write_head_sync, *head, durable=durable)
                )
        self._mark_head_persisted(head)

    async def sync_head(self) -> None:
        """Persist the head position durably now (otherwise it is saved lazily)."""
        self._check_open()
        await self._persist_head(durable=True)

    # -- maintenance ------------------------------------------------------------------------
    async def purge_older_than(self, when: float) -> int:
        """Drop every head record appended before ``when`` (wall-clock seconds); return how many.

        Records are purged one by one by their own timestamp (the reference drops whole segments
        by file mtime). If the queue is then empty, the tail is rolled so its space is reclaimed.
        """
        self._check_open()
        cutoff = int(when * 1e9)
        purged = 0
        while True:
            rec = await self.current_record()
            if rec is None or rec.timestamp_ns >= cutoff:
                break
            await self.advance()
            purged += 1
        if rec is None and len(self._segments) == 1 and self._segments[0].size > HEADER_SIZE:
            async with self._write_lock, self._commit.paused():
                # Re-checked under the lock: a writer that got it first may have appended to
                # the head segment (and rolled), so it holds unread records again.
                if self._open and self._hpos >= self._segments[0].size:
                    progress = _BatchProgress()
                    with self._io_errors("rolling a segment of"):
                        await trio.to_thread.run_sync(self._roll_sync, progress)
                    self._apply(progress)
                    # Only a fully read head segment is trimmed; appends now go to the new one.
                    await self._trim_head()
            await self._release_late()
        if purged:
            await self._persist_head()
        return purged

    def _roll_sync(self, progress: _BatchProgress) -> None:
        """Worker thread: start the next segment and make it the tail (writer holds the lock)."""
        new_id = self._w_id + 1
        path = self._create_segment_sync(new_id)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.close(self._w_fd)
        self._w_fd, self._w_id, self._w_size = fd, new_id, HEADER_SIZE
        progress.created.append(new_id)

    def set_max_segment_size(self, size: int) -> None:
        """Change the segment size; a tail already at or over it is closed by the next append."""
        self.options = attrs.evolve(self.options, max_segment_size=size)

    def disk_usage(self) -> int:
        """Bytes of all segments (headers and framing included), as last known durable."""
        return self._usage

    def pending_bytes(self) -> int:
        """Bytes of the records not yet consumed (framing included, segment headers not).

        Unlike :meth:`disk_usage`, this leaves out what was read and advanced past but is still
        on disk because its segment has not been trimmed yet.
        """
        if not self._segments:
            return 0
        head = self._segments[0]
        rest = sum(s.size - HEADER_SIZE for s in self._segments[1:])
        return max(0, head.size - self._hpos) + rest

    def last_modified(self) -> float:
        """Wall-clock time of the last append (the tail's mtime right after open)."""
        return self._last_modified

    def position(self) -> QueuePosition:
        self._check_open()
        head, tail = self._segments[0], self._segments[-1]
        return QueuePosition(head.id, self._hpos, tail.id, tail.size)

    @property
    def is_open(self) -> bool:
        return self._open

    def segment_ids(self) -> list[int]:
        return [s.id for s in self._segments]


def _swap_reader(old_fd: int, path: str) -> int:
    if old_fd >= 0:
        os.close(old_fd)
    return os.open(path, os.O_RDONLY)


_P = ParamSpec("_P")
_QueueContext = AbstractAsyncContextManager[DiskBackedQueue]


def _options_as_keywords(
    options: Callable[_P, QueueOptions],
) -> Callable[
    [Callable[[str | os.PathLike[str], QueueOptions], _QueueContext]],
    Callable[Concatenate[str | os.PathLike[str], _P], _QueueContext],
]:
    """Make ``opener(directory, options)`` callable as ``opener(directory, **options)``.

    The keywords are ``options``' own parameters (for mypy too, through the ParamSpec), so the
    queue's options are declared once, in :class:`QueueOptions`, not copied into a signature.
    """

    def decorate(
        opener: Callable[[str | os.PathLike[str], QueueOptions], _QueueContext],
    ) -> Callable[Concatenate[str | os.PathLike[str], _P], _QueueContext]:
        def call(
            directory: str | os.PathLike[str], /, *args: _P.args, **kwargs: _P.kwargs
        ) -> _QueueContext:
            return opener(directory, options(*args, **kwargs))

        update_wrapper(call, opener)
        # What help() and IDEs show: the directory, then the options' keywords.
        first = next(iter(inspect.signature(opener).parameters.values()))
        keywords = inspect.signature(options).parameters.values()
        call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [first.replace(kind=inspect.Parameter.POSITIONAL_ONLY), *keywords],
            return_annotation=_QueueContext,
        )
        return call

    return decorate


@_options_as_keywords(QueueOptions)
@asynccontextmanager
async def open_queue(
    directory: str | os.PathLike[str], options: QueueOptions
) -> AsyncIterator[DiskBackedQueue]:
    """Open the queue in ``directory`` for the duration of the block; it is closed on exit.

    Called as ``open_queue(directory, **options)``: the keywords are the fields of
    :class:`QueueOptions`, all optional. ``close_timeout`` bounds the close on exit (see
    :meth:`DiskBackedQueue.aclose`).
    """
    queue = DiskBackedQueue(directory, options)
    await queue.open()
    try:
        yield queue
    finally:
        await queue.aclose()
