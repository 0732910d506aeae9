"""The ping entry's wire format.

A ping entry is the type byte ``b"P"`` followed by a protobuf-encoded ``PingCommand`` message::

    message PingCommand {
        bytes  writer = 1;   // the pinger's random 16-byte id
        uint64 seq    = 2;   // 1, 2, 3, ... per pinger
    }

So ``encode_ping(w, 1)`` is ``b"P" + b"\\x0a\\x10" + w + b"\\x10\\x01"``. This is byte-for-byte
the format Akutan's logping writes (its ``'P'`` command type plus ``PingCommand``), so a pinger
here can share a log with the reference's readers. We hand-roll the two fields instead of pulling
in protobuf: decoding accepts the fields in any order and skips unknown fields, as protobuf would.

Unlike the reference, an entry that is not a ping (another type byte, or a ``'P'`` entry that does
not parse) is not an error: logs such as an etcd prefix may be shared with other writers, and the
pinger only has to recognise its own entries.
"""

from __future__ import annotations

import attrs

from .._varint import encode_varint, read_fields

__all__ = ["PING_TYPE", "WRITER_ID_LEN", "Ping", "decode_ping", "encode_ping"]

PING_TYPE = b"P"
WRITER_ID_LEN = 16

_TAG_WRITER = (1 << 3) | 2  # field 1, length-delimited
_TAG_SEQ = (2 << 3) | 0  # field 2, varint
_MAX_U64 = (1 << 64) - 1


@attrs.frozen
class Ping:
    """A decoded ping entry: who wrote it and its sequence number."""

    writer: bytes
    seq: int


def encode_ping(writer: bytes, seq: int) -> bytes:
    """Encode a ping entry for ``writer`` (any length; pingers use 16 bytes) and ``seq`` (u64)."""
    if not 0 <= seq <= _MAX_U64:
        raise ValueError(f"ping seq {seq} is outside the uint64 range")
    head = PING_TYPE + bytes([_TAG_WRITER]) + encode_varint(len(writer))
    return head + writer + bytes([_TAG_SEQ]) + encode_varint(seq)


def decode_ping(data: bytes) -> Ping | None:
    """Return the ping in ``data``, or None if ``data`` is not a well-formed ping entry."""
    if not data.startswith(PING_TYPE):
        return None
    writer = b""
    seq = 0
    try:
        for number, wire, value in read_fields(data, 1):
            # A varint is the only int; a wire type 2 field, bytes.
            if number == 2 and isinstance(value, int):
                seq = value
            elif number == 1 and wire == 2 and isinstance(value, bytes):
                writer = value
    except ValueError:
        return None
    return Ping(writer=writer, seq=seq)
