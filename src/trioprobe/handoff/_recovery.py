"""What opening a queue directory finds and repairs: the recovery after a crash.

Kept apart from :mod:`.disk_queue` (the running queue) because it is its own concern with its own
rules: it runs once, in the worker thread that opens the queue, before any record is appended or
read, and it decides from the files alone where the head is and which bytes are good:

- a missing directory content becomes segment 1 and a head file pointing at its first record;
- segments wholly before the head (left by a crash between saving the head and unlinking them)
  are removed;
- the tail segment is scanned, and a torn or corrupt tail is cut off (fsynced) so appends
  continue after the last good record; other segments are scanned too with ``verify``, else only
  their headers are checked (their records are checked one by one as they are read);
- the head offset is moved to a record boundary of its segment if it is not on one.

Everything found goes into a :class:`RecoveryReport` (``clean`` after an orderly close).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import attrs

from ._format import (
    HEADER_SIZE,
    align_head,
    check_segment_header,
    encode_segment_header,
    list_segments,
    read_head_file,
    resolve_head,
    scan,
)

__all__ = ["TruncatedTail", "RecoveryReport", "Segment", "Recovered", "recover", "fsync_dir"]

#: The largest record length the format can hold (a u32).
MAX_LEN = 2**32 - 1


@attrs.frozen
class TruncatedTail:
    """A torn or corrupt tail cut off on open: ``dropped`` bytes from ``offset`` of ``segment``."""

    segment: int
    offset: int
    dropped: int


@attrs.frozen
class RecoveryReport:
    """What ``open`` found and repaired. ``clean`` is true after an orderly close."""

    truncated: tuple[TruncatedTail, ...] = ()
    #: Corrupt regions found while scanning on open (each is skipped on read, never returned).
    corrupt_records: int = 0
    #: (segment, problem) for segments whose header is damaged (their records are still read).
    bad_headers: tuple[tuple[int, str], ...] = ()
    #: Fully consumed segments left behind by a crash between persisting the head and unlinking.
    removed_segments: tuple[int, ...] = ()
    #: Why the head file was not used as it was, if it was not.
    head_note: str | None = None

    @property
    def clean(self) -> bool:
        return not (self.truncated or self.corrupt_records or self.bad_headers or self.head_note)


@attrs.define
class Segment:
    """One segment file of an open queue."""

    id: int
    path: str
    #: Durable bytes: the reader never reads past this.
    size: int


@attrs.frozen
class Recovered:
    """The state a queue opens with."""

    segments: list[Segment]
    #: Where reading starts in ``segments[0]``.
    head_offset: int
    #: The head as the head file holds it, if it was used as it was (else it must be saved).
    persisted_head: tuple[int, int] | None
    report: RecoveryReport


@attrs.define
class _Findings:
    truncated: list[TruncatedTail] = attrs.Factory(list)
    bad_headers: list[tuple[int, str]] = attrs.Factory(list)
    corrupt: int = 0


def fsync_dir(path: str) -> None:
    """Make a directory's entries (a created, renamed or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(
    directory: str,
    *,
    verify: bool,
    create_segment: Callable[[int], str],
    write_head: Callable[[int, int], None],
    rewrite: Callable[[str, bytes], None],
) -> Recovered:
    """Find (and repair) the queue in ``directory``; blocking, so call it in a worker thread.

    The file writes that keep the queue's durability rules (atomic segment creation, the head
    file, a rewritten segment) are the queue's own, passed in.
    """
    ids = list_segments(directory)
    file_head = read_head_file(directory)
    if not ids:
        create_segment(1)
        write_head(1, HEADER_SIZE)
        fsync_dir(directory)
        ids = [1]
        file_head = (1, HEADER_SIZE)
    start_id, start_off, head_note = resolve_head(file_head, ids)
    removed = _remove_consumed(directory, ids, start_id)
    ids = [i for i in ids if i >= start_id]
    found = _Findings()
    segments: list[Segment] = []
    for i in ids:
        path = os.path.join(directory, str(i))
        is_tail = i == ids[-1]
        if is_tail or verify:
            size, boundaries, good_end = _scan_segment(i, path, is_tail, found, rewrite)
            if i == start_id:
                start_off, moved = align_head(i, start_off, boundaries, good_end)
                head_note = moved or head_note
        else:
            size = _check_header(i, path, found)
        segments.append(Segment(i, path, size))
    head_seg = segments[0]
    if not HEADER_SIZE <= start_off <= head_seg.size:
        head_note = f"head offset {start_off} outside segment {head_seg.id}; reading it all"
        start_off = HEADER_SIZE
    head = file_head if isinstance(file_head, tuple) else None
    report = RecoveryReport(
        tuple(found.truncated), found.corrupt, tuple(found.bad_headers), tuple(removed), head_note
    )
    return Recovered(segments, start_off, head if head_note is None else None, report)


def _remove_consumed(directory: str, ids: list[int], start_id: int) -> list[int]:
    removed = []
    for i in ids:
        if i < start_id:
            os.unlink(os.path.join(directory, str(i)))
            removed.append(i)
    if removed:
        fsync_dir(directory)
    return removed


def _scan_segment(
    seg_id: int,
    path: str,
    is_tail: bool,
    found: _Findings,
    rewrite: Callable[[str, bytes], None],
) -> tuple[int, list[int], int]:
    """Check every record of one segment, cutting a bad tail off the last one; return its
    size, the offsets of its records and where its good records end."""
    with open(path, "rb") as f:
        data = f.read()
    problem = check_segment_header(data)
    if problem is not None:
        found.bad_headers.append((seg_id, problem))
        if len(data) < HEADER_SIZE and is_tail:
            # Cannot hold records (creation is atomic, so this is outside damage).
            data = encode_segment_header()
            rewrite(path, data)
    result = scan(data, HEADER_SIZE, MAX_LEN)
    found.corrupt += len(result.corrupt)
    size = len(data)
    if is_tail and result.good_end < size:
        found.truncated.append(TruncatedTail(seg_id, result.good_end, size - result.good_end))
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, result.good_end)
            os.fsync(fd)
        finally:
            os.close(fd)
        size = result.good_end
    elif result.good_end < size:
        found.corrupt += 1
    return size, [off for off, _, _ in result.records], result.good_end


def _check_header(seg_id: int, path: str, found: _Findings) -> int:
    """Check one segment's header only (its records are checked as they are read)."""
    with open(path, "rb") as f:
        problem = check_segment_header(f.read(HEADER_SIZE))
    if problem is not None:
        found.bad_headers.append((seg_id, problem))
    return os.stat(path).st_size
