"""The on-disk format of a handoff queue (documented byte by byte in ``docs/handoff-format.md``).

Everything here is synchronous and pure (bytes in, values out) or does plain blocking file I/O, so
it can run in a worker thread (the queue) or directly (``trioprobe queue inspect``).

Segment file ``<dir>/<n>`` (``n`` = 1, 2, 3 ... in decimal, read in numeric order)::

    header  16 bytes: magic b"TPHQSEG\\0" | version u16 | reserved u16 | crc32c(bytes 0..12) u32
    record  16 bytes: crc32c u32 | payload length u32 | append time ns u64 | payload

(all integers big-endian).

A record's CRC covers its length, its time and its payload, so a corrupt length is caught too.
Head file ``<dir>/head``: magic b"TPHQHEAD" | version u16 | reserved u16 | segment u64 | offset u64
| crc32c(bytes 0..28) u32, all big-endian, 32 bytes, replaced atomically (write, rename).
"""

from __future__ import annotations

import enum
import os
import re
import struct
from collections.abc import Sequence

import attrs
import crc32c as _crc32c

__all__ = [
    "HEADER_SIZE",
    "RECORD_HEADER_SIZE",
    "FORMAT_VERSION",
    "Parse",
    "ScanResult",
    "encode_record",
    "encode_segment_header",
    "check_segment_header",
    "parse_record",
    "resync",
    "scan",
    "encode_head",
    "decode_head",
    "read_head_file",
    "resolve_head",
    "align_head",
    "list_segments",
]

SEGMENT_MAGIC = b"TPHQSEG\x00"
HEAD_MAGIC = b"TPHQHEAD"
FORMAT_VERSION = 1
HEADER_SIZE = 16
RECORD_HEADER_SIZE = 16
HEAD_FILE = "head"
HEAD_SIZE = 32
LOCK_FILE = "lock"

_SEG_HEADER = struct.Struct(">8sHH")
_REC_HEADER = struct.Struct(">IIQ")
_REC_TAIL = struct.Struct(">IQ")
_HEAD = struct.Struct(">8sHHQQ")
_U32 = struct.Struct(">I")
_SEGMENT_NAME = re.compile(r"[1-9][0-9]{0,18}")
_NON_ZERO = re.compile(rb"[^\x00]")

crc32c = _crc32c.crc32c


def encode_segment_header() -> bytes:
    head = _SEG_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0)
    return head + _U32.pack(crc32c(head))


def check_segment_header(data: bytes) -> str | None:
    """``None`` if ``data`` starts with a valid header, else why not (for the recovery report)."""
    if len(data) < HEADER_SIZE:
        return f"header is {len(data)} bytes, expected {HEADER_SIZE}"
    magic, version, _ = _SEG_HEADER.unpack_from(data)
    (crc,) = _U32.unpack_from(data, 12)
    if crc != crc32c(data[:12]):
        return "header checksum mismatch"
    if magic != SEGMENT_MAGIC:
        return f"bad magic {magic!r}"
    if version != FORMAT_VERSION:
        return f"unsupported format version {version}"
    return None


def encode_record(payload: bytes, timestamp_ns: int) -> bytes:
    tail = _REC_TAIL.pack(len(payload), timestamp_ns)
    crc = crc32c(payload, crc32c(tail))
    return _U32.pack(crc) + tail + payload


class Parse(enum.Enum):
    OK = 0
    #: The bytes end inside the record: at the end of a file this is a torn write.
    TRUNCATED = 1
    #: The checksum does not match (or the length is impossible): corrupt bytes.
    BAD = 2


def parse_record(buf: bytes | memoryview, off: int, max_len: int) -> tuple[Parse, int, int]:
    """Parse the record at ``buf[off:]``: ``(status, payload length, time ns)``."""
    end = len(buf)
    if off + RECORD_HEADER_SIZE > end:
        return Parse.TRUNCATED, 0, 0
    crc, length, ts = _REC_HEADER.unpack_from(buf, off)
    if length > max_len:
        return Parse.BAD, 0, 0
    stop = off + RECORD_HEADER_SIZE + length
    if stop > end:
        return Parse.TRUNCATED, length, ts
    view = memoryview(buf)
    if crc32c(view[off + RECORD_HEADER_SIZE : stop], crc32c(view[off + 4 : off + 16])) != crc:
        return Parse.BAD, 0, 0
    return Parse.OK, length, ts


def resync(buf: bytes | memoryview, off: int, max_len: int) -> int | None:
    """The offset of the first valid record after a bad one at ``off``, or ``None``.

    A corrupt length cannot be trusted to skip by, so every later offset is a candidate; but
    only few can hold a record, and those are found with C-speed searches instead of a parse per
    byte (which cost ~1.6 s per MiB of garbage). A record's payload must fit in the bytes left,
    so its big-endian length starts with as many zero bytes as that room's does: ``bytes.find``
    jumps to the next offset whose length field has them (1 offset in 256 of random bytes while
    under 16 MiB are left). Runs of 16 zero bytes are jumped over at once: an all-zero header
    is never valid (crc32c of 12 zero bytes is not 0), and zero-filled tails are what a crash on
    many filesystems leaves. Still O(n) Python steps for adversarial input, so callers on the
    event loop run it in a thread.
    """
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    end = len(data)
    pos = off + 1
    zero = b"\x00" * RECORD_HEADER_SIZE
    last = end - RECORD_HEADER_SIZE  # the last offset a header fits at
    while pos <= last:
        room = min(end - pos - RECORD_HEADER_SIZE, max_len)
        # Leading zero bytes every fitting length has; the room only shrinks as pos grows,
        # so the requirement holds for every later offset too.
        zeros = 4 - (room.bit_length() + 7) // 8
        if zeros:
            found = data.find(b"\x00" * zeros, pos + 4, last + 4 + zeros)
            if found < 0:
                return None
            pos = found - 4
        if data[pos : pos + RECORD_HEADER_SIZE] == zero:
            m = _NON_ZERO.search(data, pos)
            if m is None:
                return None
            pos = max(pos + 1, m.start() - RECORD_HEADER_SIZE + 1)
            continue
        status, _, _ = parse_record(data, pos, max_len)
        if status is Parse.OK:
            return pos
        pos += 1
    return None


@attrs.frozen
class ScanResult:
    """What a full scan of one segment's bytes found."""

    #: (offset, payload length, time ns) of every valid record.
    records: tuple[tuple[int, int, int], ...]
    #: Offsets where a corrupt region starts that valid records follow (skipped on read).
    corrupt: tuple[int, ...]
    #: Where the valid data ends: everything after it is a torn or corrupt tail.
    good_end: int


def scan(data: bytes, start: int = HEADER_SIZE, max_len: int = 2**32 - 1) -> ScanResult:
    """Walk every record of a segment from ``start``, resynchronising past corrupt ones."""
    records: list[tuple[int, int, int]] = []
    corrupt: list[int] = []
    off = start
    end = len(data)
    good_end = min(start, end)
    while off < end:
        status, length, ts = parse_record(data, off, max_len)
        if status is Parse.OK:
            records.append((off, length, ts))
            off += RECORD_HEADER_SIZE + length
            good_end = off
            continue
        nxt = resync(data, off, max_len)
        if nxt is None:
            break
        corrupt.append(off)
        off = nxt
    return ScanResult(tuple(records), tuple(corrupt), good_end)


def encode_head(segment: int, offset: int) -> bytes:
    body = _HEAD.pack(HEAD_MAGIC, FORMAT_VERSION, 0, segment, offset)
    return body + _U32.pack(crc32c(body))


def decode_head(data: bytes) -> tuple[int, int] | str:
    """``(segment, offset)`` from a head file, or why it cannot be used."""
    if len(data) != HEAD_SIZE:
        return f"head file is {len(data)} bytes, expected {HEAD_SIZE}"
    (crc,) = _U32.unpack_from(data, 28)
    if crc != crc32c(data[:28]):
        return "head file checksum mismatch"
    magic, version, _, segment, offset = _HEAD.unpack_from(data)
    if magic != HEAD_MAGIC or version != FORMAT_VERSION:
        return f"head file has bad magic {magic!r} or version {version}"
    return segment, offset


def read_head_file(directory: str) -> tuple[int, int] | str | None:
    """The head file's ``(segment, offset)``, why it cannot be used, or ``None`` if missing."""
    try:
        with open(os.path.join(directory, HEAD_FILE), "rb") as f:
            return decode_head(f.read(64))
    except FileNotFoundError:
        return None


def resolve_head(
    head: tuple[int, int] | str | None, ids: Sequence[int]
) -> tuple[int, int, str | None]:
    """Where reading starts: ``(segment, offset, note)`` from ``read_head_file`` and the ids.

    ``note`` says why the head file was not used as it is, if it was not. The queue (on open)
    and offline inspection both use this, so they agree on where the head is. The offset is
    not checked against the records yet: see :func:`align_head`.
    """
    if not ids:
        return 1, HEADER_SIZE, None
    first = ids[0]
    if head is None:
        return first, HEADER_SIZE, "no head file; reading from the first segment"
    if isinstance(head, str):
        return first, HEADER_SIZE, f"{head}; reading from the first segment"
    seg, off = head
    if seg in ids:
        return seg, off, None
    later = [i for i in ids if i > seg]
    if later:
        # A crash after the head segment was unlinked: the next one starts fresh.
        return later[0], HEADER_SIZE, None
    return first, HEADER_SIZE, f"head segment {seg} is past the last segment {ids[-1]}"


def align_head(
    segment: int, offset: int, boundaries: Sequence[int], good_end: int
) -> tuple[int, str | None]:
    """Move a head ``offset`` that is not at a record boundary to the next one (or the end).

    ``boundaries`` are the offsets of the segment's valid records and ``good_end`` the end of
    the last one (``ScanResult``). Returns the offset and a note if it moved.
    """
    if offset in boundaries or offset == good_end:
        return offset, None
    nxt = [b for b in boundaries if b > offset]
    new = nxt[0] if nxt else good_end
    return new, (
        f"head offset {offset} of segment {segment} is not a record boundary; moved to {new}"
    )


def list_segments(directory: str) -> list[int]:
    """Segment ids in ``directory``, in numeric order (other names are ignored)."""
    ids = []
    with os.scandir(directory) as it:
        for entry in it:
            if _SEGMENT_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                ids.append(int(entry.name))
    ids.sort()
    return ids
