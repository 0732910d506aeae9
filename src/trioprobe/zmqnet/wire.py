"""The wire format: plain ZeroMQ request/reply frames, so plain pyzmq peers interoperate.

A **request** is one frame: the message bytes. A **reply** is one frame (the handler's answer) or,
when the server's handler raised, two frames: :data:`ERROR_MARKER` and a UTF-8 description.
ZeroMQ adds its routing envelope in front (a REQ socket adds an empty delimiter frame; a ROUTER
prepends the peer's routing id); the servers echo whatever envelope came in, so REQ, REQ with
``REQ_CORRELATE``, and DEALER peers all work.

The reference (rtreq) wrapped each message in a protobuf ``BasicMessage{sender, message}``. We do
not: a plain ``zmq.REQ`` client must be able to talk to our servers, and the sender is already
known to a ROUTER as the routing id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .errors import ProtocolError

__all__ = ["ERROR_MARKER", "decode_reply", "error_reply", "split_envelope"]

#: First frame of an error reply. A one-frame reply is always a success, so a handler may return
#: these bytes without being mistaken for an error.
ERROR_MARKER: Final = b"ERROR"


def split_envelope(frames: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a message a ROUTER received into (envelope to echo back, body frames).

    The envelope is the routing id plus everything up to and including the first empty
    delimiter frame (REQ and REQ_CORRELATE peers send one). A bare DEALER sends no delimiter;
    its envelope is just the routing id.
    """
    for i in range(1, len(frames)):
        if not frames[i]:
            return list(frames[: i + 1]), list(frames[i + 1 :])
    return list(frames[:1]), list(frames[1:])


def error_reply(detail: str) -> list[bytes]:
    """The body frames of an error reply."""
    return [ERROR_MARKER, detail.encode("utf-8", "replace")]


def decode_reply(frames: Sequence[bytes]) -> tuple[bool, bytes]:
    """Decode reply body frames (envelope already removed) to (ok, payload or error text)."""
    if len(frames) == 1:
        return True, frames[0]
    if len(frames) == 2 and frames[0] == ERROR_MARKER:
        return False, frames[1]
    raise ProtocolError(f"unexpected reply of {len(frames)} frames (expected 1, or 2 for an error)")
