"""Protobuf base-128 varints and the field walk: the one codec the log-ping entries and the grpc
probe share.

A private leaf (standard library only), so the logping capability may import it and still stand
alone.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["encode_varint", "read_fields", "read_varint"]


def encode_varint(n: int) -> bytes:
    """``n`` (>= 0) as a varint: seven bits a byte, low first, the high bit saying more follow."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos:]`` and the position after it; ``ValueError`` when it is cut off
    or longer than 64 bits (a malformed or hostile message, never an endless loop)."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def read_fields(buf: bytes, pos: int = 0) -> Iterator[tuple[int, int, int | bytes]]:
    """Each field of the protobuf message ``buf[pos:]`` as ``(number, wire type, value)``.

    A varint (wire type 0) is an int; a length-delimited (2), fixed64 (1) or fixed32 (5) field
    is its bytes, so a reader takes what it knows and skips the rest, as protobuf readers must.
    ``ValueError`` for a truncated message or an unknown wire type.
    """
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
            yield number, wire, value
            continue
        if wire == 2:
            size, pos = read_varint(buf, pos)
        elif wire in _FIXED_SIZES:
            size = _FIXED_SIZES[wire]
        else:
            raise ValueError(f"protobuf has a field of unknown wire type {wire}")
        if pos + size > len(buf):
            raise ValueError("protobuf is truncated")
        yield number, wire, buf[pos : pos + size]
        pos += size


_FIXED_SIZES = {1: 8, 5: 4}
