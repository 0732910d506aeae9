"""The FileLog's tail reader: whole, valid records as they appear, from where a reader left off.

Two costs are kept off the event loop. A reader (re)start does not read the file from its start:
every tail of one path leaves a :class:`Bookmark` (a record's index and where it ends), and a
new tail whose start index is past it begins there, once it has checked that the record before
the bookmark is still in the file, unchanged. And a read of more than ``INLINE_READ_MAX`` bytes
(a start, a catch-up after a pause, another process's burst), as well as opening the file, runs
in a worker thread, ``READ_MAX`` bytes at a time. The few bytes a ping appends, already in the
page cache, are read inline: a thread hop (~150 µs) would be most of the latency being measured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import attrs
import crc32c
import trio

from .frames import HEADER, MAGIC, split_frames
from .protocol import LogError, LogTruncatedError

#: Larger reads than this go to a worker thread.
INLINE_READ_MAX = 64 * 1024
#: The most one read takes in (parsing it in the thread is part of the same hop).
READ_MAX = 1024 * 1024


@attrs.frozen
class Bookmark:
    """Where a tail got to in one file: records up to ``index`` end at ``offset``; the last of
    them starts at ``last_start`` and has the checksum ``last_crc`` (to check it is still there:
    a file replaced under the same inode number, or cut and rewritten, fails that check)."""

    identity: tuple[int, int]  # st_dev, st_ino
    index: int
    offset: int
    last_start: int
    last_crc: int


class PathState:
    """What every FileLog of one path shares in this process: the append wake-up (so a reader
    sees an append at once instead of polling) and the furthest bookmark of its tails."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.bookmark: Bookmark | None = None

    def notify(self) -> None:
        self.event.set()
        self.event = trio.Event()


class Tail:
    """Reads one FileLog from ``start_index`` on; see the module doc."""

    def __init__(self, path: Path, name: str, state: PathState, start_index: int) -> None:
        self.path = path
        self.name = name
        self._state = state
        self._start_index = start_index
        self._fh: BinaryIO | None = None
        self._identity = (0, 0)
        self._buf = b""
        self._offset = 0  # file offset of the start of self._buf
        self._index = 0  # index of the last whole record before self._offset
        self._last_start = 0
        self._last_crc = 0
        #: Whether the last read stopped at READ_MAX with more in the file.
        self.behind = False
        self._bytes_read = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    async def read_records(self) -> list[tuple[int, bytes]]:
        """The (index, data) of the new records at or after the start index."""
        if self._fh is None or self._pending() > INLINE_READ_MAX:
            records = await trio.to_thread.run_sync(self._read)
        else:
            records = self._read()
        self._leave_bookmark()
        return records

    def take_bytes_read(self) -> int:
        """The bytes read from the file since the last call."""
        taken, self._bytes_read = self._bytes_read, 0
        return taken

    def _pending(self) -> int:
        assert self._fh is not None
        return os.fstat(self._fh.fileno()).st_size - self._offset - len(self._buf)

    def _open(self) -> bool:
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            return False
        st = os.fstat(self._fh.fileno())
        self._identity = (st.st_dev, st.st_ino)
        mark = self._state.bookmark
        if mark is not None and mark.index < self._start_index and self._still_there(mark):
            self._offset, self._index = mark.offset, mark.index
            self._last_start, self._last_crc = mark.last_start, mark.last_crc
            self._fh.seek(self._offset)
        return True

    def _still_there(self, mark: Bookmark) -> bool:
        """Whether the file is the bookmark's and its last record is still whole and valid."""
        assert self._fh is not None
        if mark.identity != self._identity:
            return False
        frame = os.pread(self._fh.fileno(), mark.offset - mark.last_start, mark.last_start)
        if len(frame) < HEADER.size:
            return False
        length, crc = HEADER.unpack_from(frame)
        if HEADER.size + length != len(frame) or crc != mark.last_crc:
            return False
        return bool(crc32c.crc32c(frame[HEADER.size :]) == crc)

    def _read(self) -> list[tuple[int, bytes]]:
        if self._fh is None and not self._open():
            return []
        assert self._fh is not None
        size = os.fstat(self._fh.fileno()).st_size
        if size < self._offset + len(self._buf):
            # Someone cut the file below what we already read: those records are gone.
            raise LogTruncatedError(self.name, 1)
        chunk = self._fh.read(READ_MAX)
        self._bytes_read += len(chunk)
        self._buf += chunk
        self.behind = len(chunk) == READ_MAX
        pos = 0
        if self._offset == 0:
            if len(self._buf) < len(MAGIC):
                return []
            if self._buf[: len(MAGIC)] != MAGIC:
                raise LogError(f"log {self.name!r}: {self.path} is not a trioprobe log file")
            pos = len(MAGIC)
        frames, end = split_frames(self._buf, pos)
        out: list[tuple[int, bytes]] = []
        for start, stop in frames:
            self._index += 1
            self._last_start = self._offset + start - HEADER.size
            self._last_crc = HEADER.unpack_from(self._buf, start - HEADER.size)[1]
            if self._index >= self._start_index:
                out.append((self._index, self._buf[start:stop]))
        self._buf = self._buf[end:]
        self._offset += end
        return out

    def _leave_bookmark(self) -> None:
        if self._index == 0:
            return
        mark = self._state.bookmark
        if mark is None or mark.identity != self._identity or mark.index < self._index:
            self._state.bookmark = Bookmark(
                self._identity, self._index, self._offset, self._last_start, self._last_crc
            )
