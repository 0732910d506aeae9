"""The exceptions of :mod:`trioprobe.zmqnet`."""

from __future__ import annotations

__all__ = [
    "MessageDroppedError",
    "MessageTooLargeError",
    "ProtocolError",
    "RemoteError",
    "ReplyTooLargeError",
    "ZmqNetError",
]


class ZmqNetError(Exception):
    """Base class of every error this package raises on purpose."""


class MessageDroppedError(ZmqNetError):
    """No reply after the last attempt: the server is down or too slow.

    The reference client logged a warning and reported *success* here; a benchmark or probe that
    believes a dropped message was delivered measures nothing, so we raise.
    """

    def __init__(self, addr: str, attempts: int, timeout: float) -> None:
        super().__init__(
            f"connection to {addr} is offline: message dropped after {attempts} attempt(s) "
            f"of {timeout:g}s each"
        )
        self.addr = addr
        self.attempts = attempts
        self.timeout = timeout


class RemoteError(ZmqNetError):
    """The server answered with an error frame (its handler raised)."""

    def __init__(self, addr: str, detail: str) -> None:
        super().__init__(f"server {addr} failed to handle the request: {detail}")
        self.addr = addr
        self.detail = detail


class ProtocolError(ZmqNetError):
    """A message that does not follow the framing in ``docs/zmqnet.md``."""


def _limit(value: int) -> str:
    return "no limit" if value < 0 else str(value)


class MessageTooLargeError(ZmqNetError):
    """A received message had more frames or bytes than the receiver allows.

    The message was read to its end (so the socket stays in step) but only ``head``, its first
    frames within the limits, was kept: a ROUTER finds the sender's routing envelope there.
    """

    def __init__(
        self, head: list[bytes], frames: int, size: int, max_frames: int, max_size: int
    ) -> None:
        super().__init__(
            f"message of {frames} frame(s) and {size} bytes is over the limit "
            f"({_limit(max_frames)} frames, {_limit(max_size)} bytes)"
        )
        self.head = head
        self.frames = frames
        self.size = size
        self.max_frames = max_frames
        self.max_size = max_size


class ReplyTooLargeError(ZmqNetError):
    """The server's reply was larger than the client's ``max_reply_size``.

    Not a drop: the server answered, so the request is not sent again (a resend would only
    fetch the same reply).
    """

    def __init__(self, addr: str, size: int, limit: int) -> None:
        super().__init__(
            f"reply from {addr} is {size} bytes, over the client's limit of {limit} bytes "
            "(raise max_reply_size to accept it)"
        )
        self.addr = addr
        self.size = size
        self.limit = limit
