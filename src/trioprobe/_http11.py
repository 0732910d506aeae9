"""HTTP/1.1 on Trio: one h11 connection over one Trio stream, for servers and clients alike.

Why one module: the ASGI server (:mod:`trioprobe._asgi`), the plain-HTTP client
(:mod:`trioprobe._lean_http`) and the test servers (:mod:`trioprobe.testing.servers`) each
had their own loop of ``conn.next_event()`` / ``stream.receive_some()`` / ``conn.send()``, and
each caught h11's and Trio's exceptions its own way. Here that loop is written once, as h11's
own Trio example suggests (send an event, receive the next), and every failure comes out as one
of a small set of typed errors, mapped once (as httpcore does with its ``map_exceptions``):

========================  ===============================================================
:class:`ConnectError`     the connection could not be opened (refused, unreachable, a name
                          that does not resolve or cannot be encoded)
:class:`ReadError`        the socket failed while reading (reset by the peer...)
:class:`WriteError`       the socket failed while writing
:class:`RemoteProtocolError`  the peer broke HTTP/1.1, or closed the connection where an
                          event was due; ``status_hint`` is the status a server answers
:class:`LocalProtocolError`   we were about to send something HTTP/1.1 forbids
========================  ===============================================================

All are :class:`HTTP11Error`; each is also the httpx exception of the same name (a subclass),
so a caller holding either transport's errors handles both with httpx's types, and the error
text (``Kind: message``, :meth:`HTTP11Error.describe`) reads the same on both paths.
A server reads a client's disconnect as a :class:`ReadError` or :class:`WriteError`.
"""

from __future__ import annotations

from typing import Final

import h11
import httpx
import trio

__all__ = [
    "ConnectError",
    "HTTP11Connection",
    "HTTP11Error",
    "LocalProtocolError",
    "ReadError",
    "RemoteProtocolError",
    "WriteError",
    "os_message",
]

#: Bytes asked of the socket per read.
READ_SIZE: Final = 65536
#: h11's default bound on a request or response head (line and headers).
MAX_HEAD_BYTES: Final = 16 * 1024
#: What a client is told when the server closes the connection instead of responding.
DISCONNECTED: Final = "Server disconnected without sending a response."
# What a socket read or write can raise: Trio wraps the OS's errors in BrokenResourceError.
_SOCKET_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class HTTP11Error(Exception):
    """A failed HTTP/1.1 exchange, one of the subclasses below."""

    #: The name the error is reported under (httpx's class of the same failure).
    kind: str = "HTTPError"

    def describe(self) -> str:
        """``Kind: message`` (only ``Kind`` when there is no message), as errors are shown."""
        message = str(self)
        return f"{self.kind}: {message}" if message else self.kind


class ConnectError(HTTP11Error, httpx.ConnectError):
    """The connection could not be opened."""

    kind = "ConnectError"


class ReadError(HTTP11Error, httpx.ReadError):
    """The socket failed while reading (e.g. ``[Errno 104] Connection reset by peer``)."""

    kind = "ReadError"


class WriteError(HTTP11Error, httpx.WriteError):
    """The socket failed while writing."""

    kind = "WriteError"


class RemoteProtocolError(HTTP11Error, httpx.RemoteProtocolError):
    """The peer broke HTTP/1.1 (or went away where an event was due)."""

    kind = "RemoteProtocolError"

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        #: The status a server answers this with (h11's ``error_status_hint``: 400, 431...).
        self.status_hint = status_hint


class LocalProtocolError(HTTP11Error, httpx.LocalProtocolError):
    """What we were about to send is not HTTP/1.1 (a bad header, a second response...)."""

    kind = "LocalProtocolError"


def os_message(exc: BaseException) -> str:
    """The OS's words (``[Errno 104] Connection reset by peer``), which Trio wraps in a
    ``BrokenResourceError``: the first OS error down the causes, else ``str(exc)``."""
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.strerror:
            return f"[Errno {cause.errno}] {cause.strerror}"
        cause = cause.__cause__ or cause.__context__
    return str(exc)


class HTTP11Connection:
    """One h11 connection (``h11.CLIENT`` or ``h11.SERVER``) over one Trio stream.

    :meth:`send` sends events, :meth:`next_event` returns the next event the peer sent,
    reading as needed; both raise only :class:`HTTP11Error` (and cancellation). ``conn`` is the
    h11 state machine, for its states; the owner closes ``stream``.
    """

    __slots__ = ("conn", "stream")

    def __init__(
        self,
        stream: trio.SocketStream,
        role: type[h11.CLIENT] | type[h11.SERVER],
        *,
        max_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self.stream = stream
        self.conn = h11.Connection(role, max_incomplete_event_size=max_head_bytes)

    async def send(self, *events: h11.Event) -> None:
        """Send ``events`` in one write (e.g. a response's head, body and end)."""
        data = self.encode(*events)
        if data:
            try:
                await self.stream.send_all(data)
            except _SOCKET_ERRORS as exc:
                raise WriteError(os_message(exc)) from None

    def encode(self, *events: h11.Event) -> bytes:
        """The bytes of ``events`` (what :meth:`send` writes), state machine advanced."""
        conn = self.conn
        try:
            if len(events) == 1:
                return conn.send(events[0]) or b""
            return b"".join(conn.send(event) or b"" for event in events)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        """The next event from the peer: ``h11.ConnectionClosed`` at its end of the stream,
        ``h11.PAUSED`` when h11 waits for :meth:`start_next_cycle`."""
        conn = self.conn
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(str(exc), exc.error_status_hint) from None
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            await self.receive_some()

    async def receive_some(self) -> None:
        """Read once from the stream into h11 (an empty read tells h11 the peer closed)."""
        try:
            data = await self.stream.receive_some(READ_SIZE)
        except _SOCKET_ERRORS as exc:
            raise ReadError(os_message(exc)) from None
        if not data and self.conn.their_state is h11.SEND_RESPONSE:
            # A server gone before its response: h11 would call that an event it cannot
            # handle; httpx's words say what happened.
            raise RemoteProtocolError(DISCONNECTED)
        try:
            self.conn.receive_data(data)
        except h11.RemoteProtocolError as exc:  # data after the peer's end of stream
            raise RemoteProtocolError(str(exc), exc.error_status_hint) from None

    @property
    def buffered(self) -> bool:
        """Whether bytes of the peer's next message are already read."""
        return bool(self.conn.trailing_data[0])

    @property
    def peer_closed(self) -> bool:
        """Whether the peer's end of stream has been read."""
        return self.conn.trailing_data[1]

    @property
    def both_done(self) -> bool:
        """Whether both sides finished this exchange and keep the connection alive."""
        conn = self.conn
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    @property
    def reusable(self) -> bool:
        """:attr:`both_done`, with nothing unasked read past the exchange (a client must not
        take a second, unasked response for the answer to its next request)."""
        conn = self.conn
        return (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
        )

    def start_next_cycle(self) -> None:
        """Ready the connection for the next exchange (both sides are ``DONE``)."""
        self.conn.start_next_cycle()
