"""The log protocol the pinger speaks, its errors, and :func:`read_with` to build a ``read``.

See the package doc (:mod:`trioprobe.logping.logs`) for the contract of ``append`` and ``read``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, runtime_checkable

import attrs
import trio

from ... import _groups

__all__ = [
    "Entry",
    "EntrySink",
    "LogError",
    "LogTruncatedError",
    "LogClosedError",
    "LogUnavailableError",
    "LogAppender",
    "LogReader",
    "Log",
    "Disconnector",
    "read_with",
]


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
