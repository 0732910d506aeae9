"""Protobuf base-128 varints: the one codec the log-ping entries and the grpc probe share.

A private leaf (standard library only), so the logping capability may import it and still stand
alone.
"""

from __future__ import annotations

__all__ = ["encode_varint", "read_varint"]


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
