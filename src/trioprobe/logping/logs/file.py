"""FileLog: a log in an append-only file of framed records (format: :mod:`.frames`)."""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import trio

from .frames import MAGIC, encode_frame, split_frames
from .protocol import Entry, EntrySink, LogClosedError, LogError, read_with
from .tail import PathState, Tail

__all__ = ["FileLog"]


class FileLog:
    """An append-only file of framed records; indexes are record numbers from 1.

    Format: the 8-byte magic ``b"TPLOG1\\n\\0"``, then records of ``u32 length, u32 CRC32C`` (big
    endian) and the payload. A record that is incomplete or fails its checksum ends the log:
    the writer cuts such a torn tail off when it opens the file, a reader treats it as "not
    written yet".

    Appends are serialised by a lock. With ``fsync=True`` each record is written and fsynced in
    one worker-thread hop (an fsync can take milliseconds to seconds). With ``fsync=False`` the
    record (~40 bytes for a ping) is written and flushed inline on the event loop: that is one
    small ``write()`` into the page cache, ~2 µs, while a thread hop costs ~150 µs here and would
    be most of every latency measured. The price: if the kernel throttles writers (a disk that
    cannot keep up with dirty pages) the write blocks the event loop for that long; use
    ``fsync=True`` where that matters. Opening (scanning) the file always runs in a thread.
    Readers follow the tail by waking on an in-process notification when this process appends,
    and by polling every ``poll_interval`` seconds for appends by another process. Readers read
    the new bytes directly, not in a thread, for the same reason: they were just written and sit
    in the page cache, and a thread hop would cost more than the read; a reader's start and any
    large catch-up are read in a thread, from where an earlier reader of the file left off
    (:mod:`._tail`), not from the file's start.
    """

    _paths: ClassVar[dict[str, PathState]] = {}

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        fsync: bool = True,
        poll_interval: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self._name = name or f"file:{self.path}"
        self.fsync = fsync
        self.poll_interval = poll_interval
        self._lock = trio.Lock()
        self._next: int | None = None  # known once the writer has scanned the file
        #: File offset where the records this writer has counted end.
        self._end = 0
        self._fh: Any = None
        self._closed = False
        self._watch = self._paths.setdefault(str(self.path.absolute()), PathState())
        #: Bytes this log's readers read from the file: a reader that restarts past where an
        #: earlier one got reads on from there, so this grows with the file, not with restarts.
        self.bytes_read = 0

    @property
    def name(self) -> str:
        return self._name

    def _open_for_append(self) -> None:
        """Scan the file, cut a torn tail, and leave a handle positioned at its end."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+b")  # noqa: SIM115 - kept open for the log's lifetime
        try:
            fh.seek(0)
            head = fh.read(len(MAGIC))
            if not head:
                fh.write(MAGIC)
                fh.flush()
                count, end = 0, len(MAGIC)
            elif head != MAGIC:
                raise LogError(f"log {self._name!r}: {self.path} is not a trioprobe log file")
            else:
                fh.seek(0)
                frames, end = split_frames(fh.read(), len(MAGIC))
                count = len(frames)
                if end < os.fstat(fh.fileno()).st_size:
                    fh.truncate(end)
        except BaseException:
            fh.close()
            raise
        self._fh = fh
        self._next = count + 1
        self._end = end

    async def _ensure_open(self) -> int:
        """The next index, opening the file first if needed. Call with ``_lock`` held."""
        if self._closed:
            raise LogClosedError(self._name)
        if self._next is None:
            await trio.to_thread.run_sync(self._open_for_append)
            if self._closed:
                # close() ran while the thread opened the file: it left the handle to us.
                self._close_file()
                raise LogClosedError(self._name)
        assert self._next is not None
        return self._next

    async def next_index(self) -> int:
        async with self._lock:
            opened = self._next is not None
            index = await self._ensure_open()
            if opened:
                # Count what other processes appended since, so the position is current.
                try:
                    await trio.to_thread.run_sync(self._catch_up, None)
                finally:
                    if self._closed:
                        self._close_file()  # close() was called meanwhile and left it to us
                index = await self._ensure_open()
            return index

    async def append(self, data: bytes) -> int:
        if self._closed:
            raise LogClosedError(self._name)
        record = encode_frame(data)
        async with self._lock:
            await self._ensure_open()
            try:
                if self.fsync:
                    await trio.to_thread.run_sync(self._write, record)
                else:
                    self._write(record)  # inline on purpose: see the class docstring
            finally:
                if self._closed:
                    # close() was called during the write and left the file to the lock
                    # holder: closing it here, after the thread is done with its fd, means
                    # no write or fsync ever runs on a closed (or reused) descriptor.
                    self._close_file()
            assert self._next is not None
            index = self._next
            self._next += 1
        self._watch.notify()
        return index

    def _write(self, record: bytes) -> None:
        self._fh.write(record)
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        # The file is opened for appending, so the offset is now the end of our record, wherever
        # O_APPEND put it: records before its start are exactly the ones before it in the log.
        end = self._fh.tell()
        self._catch_up(end - len(record))
        self._end = end

    def _catch_up(self, until: int | None) -> None:
        """Count the records another process appended between ``_end`` and ``until`` (the
        file's size if ``None``), so this writer's indexes stay the records' true positions
        (a pinger takes an index below one it has already read for a log that lost data)."""
        if until is None:
            until = os.fstat(self._fh.fileno()).st_size
        if until <= self._end:
            return
        gap = os.pread(self._fh.fileno(), until - self._end, self._end)
        frames, used = split_frames(gap, verify=False)
        assert self._next is not None
        self._next += len(frames)
        self._end += used

    def close(self) -> None:
        """Close the file; appends and this log's readers fail with ``LogClosedError``.

        An append already writing (or a file being opened) in a worker thread finishes first:
        the file is then closed by that append, under the lock that serialises the writes, so
        the thread never sees its descriptor closed or reused under it. That append returns
        its index (its record was written); every later one fails with ``LogClosedError``.
        """
        self._closed = True
        if not self._lock.locked():
            self._close_file()
        self._watch.notify()

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def read(
        self, start_index: int
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Entry]]:
        return read_with(lambda send: self._feed(start_index, send))

    async def _feed(self, start_index: int, send: EntrySink) -> None:
        tail = Tail(self.path, self._name, self._watch, max(start_index, 1))
        try:
            while True:
                if self._closed:
                    raise LogClosedError(self._name)
                wake = self._watch.event
                records = await tail.read_records()
                self.bytes_read += tail.take_bytes_read()
                for index, data in records:
                    await send.send(Entry(index, data))
                if tail.behind:  # a large file: read on before waiting for appends
                    await trio.lowlevel.checkpoint()
                    continue
                with trio.move_on_after(self.poll_interval):
                    await wake.wait()
        finally:
            tail.close()
