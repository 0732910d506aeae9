"""The exceptions of :mod:`trioprobe.zmqnet`."""

from __future__ import annotations

__all__ = ["MessageDroppedError", "ProtocolError", "RemoteError", "ZmqNetError"]


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
