"""Offline, read-only inspection of a queue directory (``trioprobe queue inspect`` / ``dump``).

Nothing here takes the queue's lock or changes a file, so it is safe to run beside a live queue
(it may then see a record being appended as a torn tail; the live queue never returns one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import attrs

from ._format import (
    HEAD_FILE,
    HEADER_SIZE,
    LOCK_FILE,
    RECORD_HEADER_SIZE,
    align_head,
    check_segment_header,
    list_segments,
    read_head_file,
    resolve_head,
    scan,
)
from .disk_queue import Record
from .errors import QueueError

__all__ = ["QueueInfo", "SegmentInfo", "inspect_queue", "iter_records"]


@attrs.frozen
class SegmentInfo:
    id: int
    size: int
    #: Valid records in the segment (read or not).
    records: int
    #: Valid records at or after the head (still to be delivered).
    pending: int
    #: Corrupt regions that valid records follow (skipped on read).
    corrupt: int
    #: Bytes after the last valid record (a torn tail; the queue truncates it on open).
    torn_bytes: int
    header_problem: str | None


@attrs.frozen
class QueueInfo:
    directory: str
    segments: tuple[SegmentInfo, ...]
    head_segment: int
    head_offset: int
    #: Why the head file could not be used as it is, if so.
    head_note: str | None

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.segments)

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.segments)

    @property
    def corrupt(self) -> int:
        return sum(s.corrupt for s in self.segments)


def _segments(directory: str) -> list[int]:
    if not os.path.isdir(directory):
        why = "it is not a directory" if os.path.exists(directory) else "it does not exist"
        raise QueueError(f"{directory} is not a queue directory ({why})")
    ids = list_segments(directory)
    if not ids and not any(
        os.path.exists(os.path.join(directory, name)) for name in (HEAD_FILE, LOCK_FILE)
    ):
        # An empty table would read as "an empty queue": say it is the wrong directory.
        raise QueueError(
            f"{directory} is not a queue directory (no segment, {HEAD_FILE} or {LOCK_FILE} file)"
        )
    return ids


def inspect_queue(directory: str | os.PathLike[str]) -> QueueInfo:
    """Scan every segment of the queue in ``directory`` and summarise it."""
    d = os.fspath(directory)
    ids = _segments(d)
    head_seg, head_off, note = resolve_head(read_head_file(d), ids)
    infos = []
    for i in ids:
        with open(os.path.join(d, str(i)), "rb") as f:
            data = f.read()
        result = scan(data)
        if i == head_seg:
            # Where the queue would start reading on open (it makes the same correction).
            boundaries = [off for off, _, _ in result.records]
            head_off, moved = align_head(i, head_off, boundaries, result.good_end)
            note = moved or note
        if i < head_seg:
            pending = 0
        elif i > head_seg:
            pending = len(result.records)
        else:
            pending = sum(1 for off, _, _ in result.records if off >= head_off)
        infos.append(
            SegmentInfo(
                id=i,
                size=len(data),
                records=len(result.records),
                pending=pending,
                corrupt=len(result.corrupt),
                torn_bytes=max(0, len(data) - max(result.good_end, HEADER_SIZE)),
                header_problem=check_segment_header(data),
            )
        )
    return QueueInfo(d, tuple(infos), head_seg, head_off, note)


def iter_records(
    directory: str | os.PathLike[str], *, all_records: bool = False
) -> Iterator[Record]:
    """The valid records from the head (or from the start with ``all_records``), in order."""
    d = os.fspath(directory)
    ids = _segments(d)
    head_seg, head_off, _ = resolve_head(read_head_file(d), ids)
    for i in ids:
        if not all_records and i < head_seg:
            continue
        with open(os.path.join(d, str(i)), "rb") as f:
            data = f.read()
        for off, length, ts in scan(data).records:
            if not all_records and i == head_seg and off < head_off:
                continue
            start = off + RECORD_HEADER_SIZE
            yield Record(data[start : start + length], ts, i, off)
