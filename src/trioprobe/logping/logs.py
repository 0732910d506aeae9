"""Logs the pinger can append to and tail: the protocol, its errors, and three implementations.

A log is a sequence of ``Entry(index, data)`` with strictly increasing indexes. ``append`` returns
the index the entry got; ``async with log.read(start) as entries`` gives a receive channel of every
entry with an index >= ``start``, following the tail forever, until it fails (the failure is raised
by the ``async with``; a normal end of the channel means the log ended without one):

- ``LogTruncatedError``: entries at or after ``start`` were discarded (compaction), so the reader
  cannot deliver what it was asked for. The pinger restarts from a fresh replay position.
- ``LogClosedError``: the log was closed; the pinger stops.
- ``LogUnavailableError``: the server went away; the pinger restarts.

A log raises ``LogError`` (or ``OSError`` for a file it cannot use) for a failure of the log; any
other exception from a log is a bug, and the pinger lets it end its run (docs/errors.md).

The channel is fed by a task inside that block, so leaving it, early or by an error, stops the
reader and releases its connection or file at once: there is no generator to ``aclose``.

Indexes may have gaps (an etcd revision counts writes to the whole key space), but never go back.
``disconnect()`` is optional: a log that has a server connection drops it and reconnects by itself
(the reference's ``Disconnector``), so a pinger can spread its measurements over servers.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import crc32c
import httpx
import trio

from .. import _groups
from .._tls import ssl_context

__all__ = [
    "Entry",
    "LogError",
    "LogTruncatedError",
    "LogClosedError",
    "LogUnavailableError",
    "LogAppender",
    "LogReader",
    "Log",
    "Disconnector",
    "MemoryLog",
    "FileLog",
    "EtcdLog",
    "LogClients",
    "check_log_spec",
    "open_log",
    "read_with",
]

logger = logging.getLogger("trioprobe.logping")


@attrs.frozen
class Entry:
    """One log entry: its index (>= 1) and its bytes."""

    index: int
    data: bytes


class LogError(Exception):
    """Base class of the errors a log raises."""


class LogTruncatedError(LogError):
    """Entries from ``requested`` on were discarded, so they cannot be read any more."""

    def __init__(self, log: str, requested: int, first_available: int | None = None) -> None:
        self.log = log
        self.requested = requested
        self.first_available = first_available
        after = f"; the first entry left is {first_available}" if first_available else ""
        super().__init__(f"log {log!r}: entry {requested} was discarded (truncated){after}")


class LogClosedError(LogError):
    """The log was closed: no more appends or reads."""

    def __init__(self, log: str) -> None:
        self.log = log
        super().__init__(f"log {log!r} is closed")


class LogUnavailableError(LogError):
    """The log's server could not be reached or broke the connection."""


class LogAppender(Protocol):
    """Appends entries. The pinger uses one of these for writes and a separate reader."""

    async def append(self, data: bytes) -> int:
        """Append ``data``; return its index once the log has acknowledged it."""
        ...


class LogReader(Protocol):
    """Tails a log."""

    def read(
        self, start_index: int
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Entry]]:
        """A channel of the entries from ``start_index`` on, following the tail; see the module
        doc (:func:`read_with` builds one from a function that sends the entries)."""
        ...


EntrySink = trio.MemorySendChannel[Entry]


@asynccontextmanager
async def read_with(
    feed: Callable[[EntrySink], Awaitable[None]],
) -> AsyncIterator[trio.MemoryReceiveChannel[Entry]]:
    """The ``read`` of a log: a channel that ``feed`` (run in a task inside this block) fills.

    The channel has no buffer; unlike a generator's, ``feed``'s task runs on while the reader
    handles an entry, so it may fetch the next one meanwhile. Leaving the block cancels ``feed``.
    An error of ``feed`` (or of the block) is raised from the ``async with`` as itself, not
    wrapped in an exception group.
    """
    send, receive = trio.open_memory_channel[Entry](0)

    async def run() -> None:
        await feed(send)
        # Closed only when feed ends normally: on an error the nursery cancels the reader
        # instead, so the reader sees that error, not an EndOfChannel of its own.
        send.close()

    # _groups unwraps only the group its nursery made: an ExceptionGroup the caller raises in
    # the block comes back as itself, and every error keeps its own __cause__ and __context__.
    async with _groups.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            yield receive
        finally:
            # Cancel first: a feed blocked in send() would see the closed channel as a
            # BrokenResourceError, an error of ours on top of the reader's way out.
            nursery.cancel_scope.cancel()
            receive.close()


@runtime_checkable
class Disconnector(Protocol):
    """A reader that can drop its server connection; it must not block, and reconnects by itself."""

    def disconnect(self) -> None: ...


class Log(LogAppender, LogReader, Protocol):
    """A log that can do both, with a name (the probe's target) and a replay position."""

    @property
    def name(self) -> str: ...

    async def next_index(self) -> int:
        """The index from which a reader sees every entry appended from now on."""
        ...


# --- MemoryLog -------------------------------------------------------------------------------


class MemoryLog:
    """An in-process log for tests and demos, with the failure modes of a real one.

    ``truncate(before)`` discards old entries (compaction), so a reader behind it gets
    ``LogTruncatedError``; ``close()`` makes appends and reads fail with ``LogClosedError``;
    ``disconnect()`` only counts, since there is no connection to drop.
    """

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self._entries: list[bytes] = []
        self._first = 1  # index of self._entries[0]
        self._closed = False
        self._changed = trio.Event()
        self.disconnects = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def first_index(self) -> int:
        """The oldest index still held."""
        return self._first

    @property
    def last_index(self) -> int:
        """The newest index appended (0 when empty)."""
        return self._first + len(self._entries) - 1

    async def next_index(self) -> int:
        await trio.lowlevel.checkpoint()
        return self.last_index + 1

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def append(self, data: bytes) -> int:
        await trio.lowlevel.checkpoint()
        return self.append_nowait(data)

    def append_nowait(self, data: bytes) -> int:
        """Append without a checkpoint (handy in tests)."""
        if self._closed:
            raise LogClosedError(self._name)
        self._entries.append(bytes(data))
        self._notify()
        return self.last_index

    def truncate(self, before: int) -> None:
        """Discard every entry with an index below ``before``."""
        drop = min(max(before - self._first, 0), len(self._entries))
        del self._entries[:drop]
        self._first += drop
        if before > self._first and not self._entries:
            self._first = before
        self._notify()

    def rewind(self, last: int) -> None:
        """Forget every entry after index ``last`` (0: all of them), as a server restored from an
        older backup (or wiped) does: the next append gets ``last + 1`` again, and a reader
        already past that waits for indexes the log has yet to reach."""
        if last < 0:
            raise ValueError(f"cannot rewind to index {last}")
        if last < self._first - 1:
            self._entries.clear()
            self._first = last + 1
        else:
            del self._entries[last - self._first + 1 :]
        self._notify()

    def close(self) -> None:
        self._closed = True
        self._notify()

    def disconnect(self) -> None:
        self.disconnects += 1

    def read(
        self, start_index: int
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Entry]]:
        return read_with(lambda send: self._feed(start_index, send))

    async def _feed(self, start_index: int, send: EntrySink) -> None:
        pos = max(start_index, 1)
        while True:
            if self._closed:
                raise LogClosedError(self._name)
            if pos < self._first:
                raise LogTruncatedError(self._name, pos, self._first)
            if pos <= self.last_index:
                data = self._entries[pos - self._first]
                await send.send(Entry(pos, data))
                pos += 1
            else:
                await self._changed.wait()


# --- FileLog ---------------------------------------------------------------------------------

_MAGIC = b"TPLOG1\n\x00"
_HEADER = struct.Struct(">II")  # payload length, CRC32C of payload


class _FileWatch:
    """Per-path wake-up so a reader in this process sees an append at once instead of polling."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def notify(self) -> None:
        self.event.set()
        self.event = trio.Event()


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
    in the page cache, and a thread hop would cost more than the read.
    """

    _watches: ClassVar[dict[str, _FileWatch]] = {}

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
        self._watch = self._watches.setdefault(str(self.path.absolute()), _FileWatch())

    @property
    def name(self) -> str:
        return self._name

    def _open_for_append(self) -> None:
        """Scan the file, cut a torn tail, and leave a handle positioned at its end."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+b")  # noqa: SIM115 - kept open for the log's lifetime
        try:
            fh.seek(0)
            head = fh.read(len(_MAGIC))
            if not head:
                fh.write(_MAGIC)
                fh.flush()
                count, end = 0, len(_MAGIC)
            elif head != _MAGIC:
                raise LogError(f"log {self._name!r}: {self.path} is not a trioprobe log file")
            else:
                fh.seek(0)
                count, end = _scan(fh.read())
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
        record = _HEADER.pack(len(data), crc32c.crc32c(data)) + data
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
        count, used = _count_frames(gap)
        assert self._next is not None
        self._next += count
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
        start_index = max(start_index, 1)
        tail = _Tail(self.path)
        try:
            index = 0
            while True:
                if self._closed:
                    raise LogClosedError(self._name)
                wake = self._watch.event
                for data in tail.read_records(self._name):
                    index += 1
                    if index >= start_index:
                        await send.send(Entry(index, data))
                with trio.move_on_after(self.poll_interval):
                    await wake.wait()
        finally:
            tail.close()


def _count_frames(buf: bytes) -> tuple[int, int]:
    """Count the whole frames at the start of ``buf``; return (count, bytes they take)."""
    pos = count = 0
    while pos + _HEADER.size <= len(buf):
        (length, _) = _HEADER.unpack_from(buf, pos)
        if pos + _HEADER.size + length > len(buf):
            break
        pos += _HEADER.size + length
        count += 1
    return count, pos


def _scan(buf: bytes) -> tuple[int, int]:
    """Count the good records in a whole file's bytes; return (count, end offset of the last)."""
    pos = len(_MAGIC)
    count = 0
    while pos + _HEADER.size <= len(buf):
        length, crc = _HEADER.unpack_from(buf, pos)
        body = buf[pos + _HEADER.size : pos + _HEADER.size + length]
        if len(body) < length or crc32c.crc32c(body) != crc:
            break
        pos += _HEADER.size + length
        count += 1
    return count, pos


class _Tail:
    """Incremental reader of a FileLog: returns whole, valid records as they appear."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._buf = b""
        self._offset = 0  # file offset of the start of self._buf

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def read_records(self, name: str) -> list[bytes]:
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            except FileNotFoundError:
                return []
        size = os.fstat(self._fh.fileno()).st_size
        if size < self._offset + len(self._buf):
            # Someone cut the file below what we already read: those records are gone.
            raise LogTruncatedError(name, 1)
        self._buf += self._fh.read()
        out: list[bytes] = []
        pos = 0
        if self._offset == 0:
            if len(self._buf) < len(_MAGIC):
                return out
            if self._buf[: len(_MAGIC)] != _MAGIC:
                raise LogError(f"log {name!r}: {self.path} is not a trioprobe log file")
            pos = len(_MAGIC)
        while pos + _HEADER.size <= len(self._buf):
            length, crc = _HEADER.unpack_from(self._buf, pos)
            end = pos + _HEADER.size + length
            if end > len(self._buf):
                break
            body = self._buf[pos + _HEADER.size : end]
            if crc32c.crc32c(body) != crc:
                break  # torn write in progress, or corruption the writer will cut off
            out.append(body)
            pos = end
        self._buf = self._buf[pos:]
        self._offset += pos
        return out


# --- EtcdLog ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # every key


class EtcdLog:
    """A log kept in etcd's MVCC history, spoken to over the v3 JSON gateway (``/v3/...``).

    ``append`` puts the entry as the value of the key ``prefix + "log"``; the put's
    ``header.revision`` is the entry's index. ``read(start)`` is a watch on the whole prefix from
    ``start_revision``: every put under the prefix is an entry, deletes are ignored. Because the log
    is the history of one key, it does not grow the key space; etcd's compaction is the log's
    truncation, and a watch that starts below the compacted revision fails with
    ``LogTruncatedError``. Revisions count writes to the whole etcd key space, so indexes have gaps.

    ``disconnect()`` breaks the current watch stream; the reader opens a new one from the next
    revision by itself, so no entry is lost. When the server is unreachable or breaks the stream,
    the reader also reconnects by itself every ``reconnect_delay`` seconds (counted in
    ``reconnects``), as the reference's log client does; only truncation is an error for the
    reader. Pass ``reconnect_delay=None`` to get ``LogUnavailableError`` instead.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "trioprobe/logping/",
        *,
        client: httpx.AsyncClient | None = None,
        name: str | None = None,
        reconnect_delay: float | None = 0.2,
    ) -> None:
        self.url = url.rstrip("/")
        self.reconnect_delay = reconnect_delay
        self.reconnects = 0
        self.prefix = prefix.encode()
        self.key = self.prefix + b"log"
        self._name = name or f"etcd:{self.url}/{prefix}"
        self._own_client = client is None
        # Deadlines come from the caller's cancel scopes; the watch stream must not time out.
        # The process's shared SSL context: a context of its own would cost ~40 ms and ~1 MiB.
        self._client = client or httpx.AsyncClient(
            verify=ssl_context(), timeout=httpx.Timeout(10.0, read=None)
        )
        self._watch_scopes: set[trio.CancelScope] = set()
        self._disconnects = 0

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> EtcdLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._client.post(f"{self.url}/v3/{path}", json=body)
        except httpx.HTTPError as exc:
            msg = f"log {self._name!r}: POST /v3/{path} failed: {exc!r}"
            raise LogUnavailableError(msg) from exc
        if resp.status_code != 200:
            raise LogUnavailableError(
                f"log {self._name!r}: POST /v3/{path} answered {resp.status_code}: "
                f"{resp.text[:200]}"
            )
        try:
            result: dict[str, Any] = resp.json()
        except ValueError:
            msg = f"log {self._name!r}: POST /v3/{path} answered non-JSON: {resp.text[:200]!r}"
            raise LogUnavailableError(msg) from None
        return result

    def _revision(self, reply: dict[str, Any], path: str) -> int:
        try:
            return int(reply["header"]["revision"])
        except (KeyError, TypeError, ValueError):
            msg = f"log {self._name!r}: POST /v3/{path} reply has no header.revision: {reply!r}"
            raise LogUnavailableError(msg) from None

    async def append(self, data: bytes) -> int:
        reply = await self._post("kv/put", {"key": _b64(self.key), "value": _b64(data)})
        return self._revision(reply, "kv/put")

    async def next_index(self) -> int:
        reply = await self._post("kv/range", {"key": _b64(self.key), "limit": 1, "keys_only": True})
        return self._revision(reply, "kv/range") + 1

    async def compact(self, revision: int) -> None:
        """Discard the history below ``revision`` (etcd compaction); for tests and operators."""
        await self._post("kv/compaction", {"revision": str(revision), "physical": True})

    def disconnect(self) -> None:
        self._disconnects += 1
        for scope in self._watch_scopes:
            scope.cancel()

    def read(
        self, start_index: int
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Entry]]:
        return read_with(lambda send: self._feed(start_index, send))

    async def _feed(self, start_index: int, send: EntrySink) -> None:
        pos = max(start_index, 1)
        while True:
            generation = self._disconnects
            try:
                async with self._watch(pos) as stream:
                    while self._disconnects == generation:
                        # Only the wait for the next batch runs in the scope disconnect()
                        # cancels: an entry being handed to the reader is never lost.
                        with trio.CancelScope() as scope:
                            self._watch_scopes.add(scope)
                            try:
                                batch = await stream.next_batch()
                            finally:
                                self._watch_scopes.discard(scope)
                        if scope.cancelled_caught:
                            break
                        for entry in batch:
                            await send.send(entry)
                            pos = entry.index + 1
                # disconnect() was called: open a new stream from the next revision.
            except LogUnavailableError as exc:
                if self.reconnect_delay is None:
                    raise
                # Like the reference's log client, ride out a server outage: the pinger keeps
                # pinging (and counting failed appends) instead of restarting in a loop.
                self.reconnects += 1
                logger.warning("%s; reconnecting in %ss", exc, self.reconnect_delay)
                await trio.sleep(self.reconnect_delay)

    def _watch(self, start: int) -> _WatchStream:
        return _WatchStream(self, start)


class _WatchStream:
    """One streaming ``POST /v3/watch``; ``next_batch()`` returns the entries of the next event."""

    def __init__(self, log: EtcdLog, start: int) -> None:
        self.log = log
        self.start = start
        self._stack = AsyncExitStack()
        self._lines: AsyncIterator[str] | None = None

    async def __aenter__(self) -> _WatchStream:
        log = self.log
        body = {
            "create_request": {
                "key": _b64(log.prefix),
                "range_end": _b64(prefix_end(log.prefix)),
                "start_revision": str(self.start),
            }
        }
        async with AsyncExitStack() as stack:
            try:
                resp = await stack.enter_async_context(
                    log._client.stream("POST", f"{log.url}/v3/watch", json=body)
                )
            except httpx.HTTPError as exc:
                msg = f"log {log.name!r}: cannot open a watch: {exc!r}"
                raise LogUnavailableError(msg) from exc
            if resp.status_code != 200:
                raise LogUnavailableError(f"log {log.name!r}: watch answered {resp.status_code}")
            lines = resp.aiter_lines()
            # Runs before the response's own exit, which the stack entered first.
            stack.push_async_callback(_finish_lines, resp, lines)
            self._lines = lines
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # Bounded and shielded: a reader leaving on cancellation must still release the
        # connection, and a server that does not answer must not hold the reader up.
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._stack.__aexit__(*exc)

    async def next_batch(self) -> list[Entry]:
        assert self._lines is not None
        while True:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                msg = f"log {self.log.name!r}: the watch stream ended"
                raise LogUnavailableError(msg) from None
            except httpx.HTTPError as exc:
                raise LogUnavailableError(f"log {self.log.name!r}: watch broke: {exc!r}") from exc
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                raise LogUnavailableError(
                    f"log {self.log.name!r}: watch sent a line that is not JSON: {line[:200]!r}"
                ) from None
            if "error" in msg:
                raise LogUnavailableError(f"log {self.log.name!r}: watch error: {msg['error']}")
            result = msg.get("result", {})
            compacted = int(result.get("compact_revision", 0) or 0)
            if compacted:
                raise LogTruncatedError(self.log.name, self.start, compacted)
            if result.get("canceled"):
                reason = result.get("cancel_reason", "no reason given")
                raise LogUnavailableError(f"log {self.log.name!r}: watch canceled: {reason}")
            entries = [
                Entry(int(ev["kv"]["mod_revision"]), base64.b64decode(ev["kv"].get("value", "")))
                for ev in result.get("events", ())
                if ev.get("type", "PUT") == "PUT"
            ]
            if entries:
                return entries


async def _finish_lines(resp: httpx.Response, lines: AsyncIterator[str]) -> None:
    """Close ``resp`` and run ``lines`` to its end.

    httpx's line iterator is a chain of async generators, and ``aclose()`` on the outer one
    leaves the inner ones unfinished (a ResourceWarning when collected). Closing the response
    first makes the next read fail through the whole chain, which finishes every generator in it.
    """
    await resp.aclose()
    try:
        async for _ in lines:
            pass
    except (httpx.StreamError, httpx.HTTPError):
        pass  # the failure closing the response was meant to cause


# --- opening a log from a spec string ---------------------------------------------------------


@attrs.frozen
class LogClients:
    """What a pinger needs for one log: an appender, a separate reader, and where to start."""

    name: str
    appender: LogAppender
    reader: LogReader
    next_index: Callable[[], Awaitable[int]]


def check_log_spec(spec: str) -> str:
    """Validate ``"memory"``, ``"file:PATH"`` or ``"etcd:URL"``; return it, or raise ValueError."""
    if spec == "memory":
        return spec
    kind, sep, rest = spec.partition(":")
    if sep and kind == "file" and rest:
        return spec
    if sep and kind == "etcd" and rest.startswith(("http://", "https://")):
        return spec
    raise ValueError(f'log {spec!r} is not one of "memory", "file:PATH" or "etcd:http://HOST:PORT"')


@asynccontextmanager
async def open_log(
    spec: str, *, prefix: str = "trioprobe/logping/", fsync: bool = True
) -> AsyncIterator[LogClients]:
    """Open the log named by ``spec`` (see ``check_log_spec``) with separate append and read
    clients, as the reference does, so the read path is measured on its own connection.

    The log's ``name`` is ``spec`` itself, so a probe's target and the log's name agree.
    """
    check_log_spec(spec)
    if spec == "memory":
        memory = MemoryLog(name=spec)
        yield LogClients(spec, memory, memory, memory.next_index)
        return
    kind, _, rest = spec.partition(":")
    if kind == "file":
        writer = FileLog(rest, name=spec, fsync=fsync)
        reader = FileLog(rest, name=spec)
        try:
            yield LogClients(spec, writer, reader, writer.next_index)
        finally:
            writer.close()
            reader.close()
        return
    async with (
        EtcdLog(rest, prefix, name=spec) as etcd_writer,
        EtcdLog(rest, prefix, name=spec) as etcd_reader,
    ):
        yield LogClients(spec, etcd_writer, etcd_reader, etcd_writer.next_index)
