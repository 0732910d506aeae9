"""The one protobuf codec (trioprobe._varint): varints and the field walk both users share."""

from __future__ import annotations

import pytest

from trioprobe._varint import encode_varint, read_fields, read_varint


def test_varints_round_trip() -> None:
    for n in (0, 1, 127, 128, 300, 2**32, 2**64 - 1):
        assert read_varint(encode_varint(n), 0) == (n, len(encode_varint(n)))


def test_fields_of_every_wire_type_in_order() -> None:
    message = (
        b"\x08\x96\x01"  # field 1, varint 150
        + b"\x12\x03abc"  # field 2, length-delimited
        + b"\x19"
        + bytes(range(8))  # field 3, fixed64
        + b"\x25"
        + b"\x01\x02\x03\x04"  # field 4, fixed32
    )
    assert list(read_fields(message)) == [
        (1, 0, 150),
        (2, 2, b"abc"),
        (3, 1, bytes(range(8))),
        (4, 5, b"\x01\x02\x03\x04"),
    ]
    assert list(read_fields(b"\xff" + message, 1)) == list(read_fields(message))


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (b"\x12\x05abc", "truncated"),  # says 5 bytes, has 3
        (b"\x19\x00\x00", "truncated"),  # fixed64 cut short
        (b"\x08", "truncated or overlong varint"),  # a key with no value
        (b"\x0b", "unknown wire type 3"),  # groups are not supported
        (b"\x08" + b"\xff" * 11, "truncated or overlong varint"),
    ],
)
def test_malformed_messages_are_value_errors(message: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        list(read_fields(message))
