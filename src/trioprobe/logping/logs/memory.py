"""MemoryLog: an in-process log for tests and demos, with the failure modes of a real one."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import trio

from .protocol import Entry, EntrySink, LogClosedError, LogTruncatedError, read_with

__all__ = ["MemoryLog"]


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
