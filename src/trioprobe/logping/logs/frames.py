"""The FileLog's on-disk format, encoded and parsed in this one place.

A file is the 8-byte magic ``b"TPLOG1\\n\\0"``, then records of a ``u32 length, u32 CRC32C``
header (big endian) and the payload. The writer's open-time scan, its count of other writers'
records and the tail reader all walk frames with :func:`split_frames`.
"""

from __future__ import annotations

import struct

import crc32c

MAGIC = b"TPLOG1\n\x00"
HEADER = struct.Struct(">II")  # payload length, CRC32C of payload


def encode_frame(data: bytes) -> bytes:
    """One record: header and payload."""
    return HEADER.pack(len(data), crc32c.crc32c(data)) + data


def split_frames(
    buf: bytes, pos: int = 0, *, verify: bool = True
) -> tuple[list[tuple[int, int]], int]:
    """The whole frames of ``buf`` from ``pos`` on: each payload's (start, end), and the offset
    just past the last one.

    Stops at the first incomplete frame (a write in progress) and, with ``verify``, at the first
    whose checksum fails (a torn write the writer will cut off). ``verify=False`` is for counting
    records another writer appended: they are whole by length, and checking them is its business.
    """
    out: list[tuple[int, int]] = []
    while pos + HEADER.size <= len(buf):
        length, crc = HEADER.unpack_from(buf, pos)
        start = pos + HEADER.size
        end = start + length
        if end > len(buf):
            break
        if verify and crc32c.crc32c(buf[start:end]) != crc:
            break
        out.append((start, end))
        pos = end
    return out, pos
