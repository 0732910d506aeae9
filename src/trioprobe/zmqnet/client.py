"""A Lazy Pirate request/reply client over a DEALER socket.

Lazy Pirate (ZeroMQ guide, chapter 4): send, wait up to ``timeout`` for the reply; on silence,
throw the socket away, reconnect under a fresh identity and resend, up to ``retries`` attempts in
all. A fresh socket is what makes this safe: a late reply to an abandoned attempt goes to the
dead socket, never to the next request.

We use DEALER rather than REQ because a REQ socket whose receive is cancelled refuses every later
send (EFSM). The DEALER adds the empty delimiter frame a REQ would, so REP and ROUTER servers
(ours or plain pyzmq ones) see an ordinary REQ request.
"""

from __future__ import annotations

import logging
import random
import socket as _stdlib_socket
from collections.abc import Callable, Sequence
from typing import Protocol

import trio
import zmq

from .errors import MessageDroppedError, RemoteError, ReplyTooLargeError
from .sockets import DEFAULT_MAX_MESSAGE_SIZE, Socket
from .wire import decode_reply

__all__ = ["Client", "Transport", "TransportFactory", "dealer_transport", "new_identity"]

log = logging.getLogger("trioprobe.zmqnet")


class Transport(Protocol):
    """What the client needs from a connected socket (a :class:`Socket` is one)."""

    async def request(self, frames: Sequence[bytes]) -> list[bytes]:
        """Send one message and return the next one received."""
        ...

    def close(self) -> None: ...


#: Makes a transport connected to ``addr`` under routing id ``identity``.
TransportFactory = Callable[[str, bytes], Transport]


def dealer_transport(addr: str, identity: bytes) -> Transport:
    """The real transport: a DEALER socket with ``identity``, connected to ``addr``.

    It sets no libzmq size limit: libzmq drops the connection of a peer whose frame is over
    ``ZMQ_MAXMSGSIZE`` without telling why, so an oversized reply would look like a lost one
    and be sent for again. :class:`Client` checks the size of the reply it got instead.
    """
    sock = Socket(zmq.DEALER, identity=identity, max_message_size=-1)
    try:
        sock.connect(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def new_identity(name: str) -> bytes:
    """``"<name>-XXXX"`` with a random 16-bit hex suffix, as the reference names its clients."""
    return f"{name}-{random.getrandbits(16):04X}".encode()


class Client(trio.abc.AsyncResource):
    """Sends requests to one server, one at a time, with timeouts and Lazy Pirate retries.

    ``identity`` is the name part of the routing id (default: the host name); every connection,
    including each reconnect, gets ``"<identity>-XXXX"`` with a new random suffix. ``retries`` is
    the total number of attempts (the reference's meaning), each bounded by ``timeout`` seconds.
    A reply over ``max_reply_size`` bytes (default 1 MiB) raises :class:`ReplyTooLargeError`.

    Concurrent :meth:`send` calls on one client are served in turn; use several clients for
    concurrency. Cancelling a :meth:`send` (say, by a probe deadline) also resets the connection,
    so a late reply can never be taken for the answer to the next request.
    """

    def __init__(
        self,
        addr: str,
        *,
        identity: str | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        max_reply_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        transport_factory: TransportFactory = dealer_transport,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if retries < 1:
            raise ValueError(f"retries is the number of attempts and must be >= 1, got {retries}")
        if max_reply_size < 0:
            raise ValueError(f"max_reply_size must be >= 0 bytes, got {max_reply_size}")
        self.addr = addr
        self.name = identity if identity is not None else _stdlib_socket.gethostname()
        self.timeout = timeout
        self.retries = retries
        #: Largest reply (bytes, all frames) returned; a larger one raises ReplyTooLargeError.
        self.max_reply_size = max_reply_size
        self._factory = transport_factory
        self._transport: Transport | None = None
        self._identity: bytes | None = None
        self._lock = trio.StrictFIFOLock()
        self._closed = False
        #: Connections made so far (the first one included).
        self.connects = 0
        #: Attempts that timed out and were retried or dropped.
        self.timeouts = 0

    @property
    def identity(self) -> bytes | None:
        """The routing id of the current connection (None while disconnected)."""
        return self._identity

    def _connect(self) -> Transport:
        if self._transport is None:
            # Checked here, not only on entry to send(): a send that was waiting for the lock
            # (or between retries) when close() ran would otherwise open a connection that
            # nobody closes.
            if self._closed:
                raise trio.ClosedResourceError(f"client for {self.addr} is closed")
            identity = new_identity(self.name)
            self._transport = self._factory(self.addr, identity)
            self._identity = identity
            self.connects += 1
        return self._transport

    def _reset(self) -> None:
        transport, self._transport, self._identity = self._transport, None, None
        if transport is not None:
            transport.close()

    async def send(self, message: bytes | str) -> bytes:
        """Send ``message`` and return the reply.

        Raises :class:`MessageDroppedError` when the last attempt times out,
        :class:`RemoteError` when the server answers with an error frame, and
        :class:`ReplyTooLargeError` (at once, without a resend) for a reply over
        ``max_reply_size`` bytes.
        """
        payload = message.encode() if isinstance(message, str) else message
        if self._closed:
            raise trio.ClosedResourceError(f"client for {self.addr} is closed")
        # acquire_nowait first: an uncontended `async with lock` costs a scheduler pass.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            for attempt in range(1, self.retries + 1):
                reply = await self._attempt(payload)
                if reply is not None:
                    ok, data = reply
                    if not ok:
                        raise RemoteError(self.addr, data.decode("utf-8", "replace"))
                    return data
                self.timeouts += 1
                if attempt < self.retries:
                    log.debug("no response from %s, retrying send (attempt %d)", self.addr, attempt)
            raise MessageDroppedError(self.addr, self.retries, self.timeout)
        finally:
            self._lock.release()

    async def _attempt(self, payload: bytes) -> tuple[bool, bytes] | None:
        """One send and wait; None on timeout. Any other exit also drops the connection."""
        transport = self._connect()
        answered = False
        try:
            with trio.move_on_after(self.timeout):
                frames = await transport.request([b"", payload])
                answered = True
                size = sum(len(frame) for frame in frames)
                if size > self.max_reply_size:
                    raise ReplyTooLargeError(self.addr, size, self.max_reply_size)
                if frames and not frames[0]:
                    frames = frames[1:]
                return decode_reply(frames)
            return None
        finally:
            if not answered:
                self._reset()

    def close(self) -> None:
        """Close now (synchronous, so it also works in a cancelled ``finally``)."""
        self._closed = True
        self._reset()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()
