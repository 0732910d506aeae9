"""The ``http`` probe's lean transport: one keep-alive HTTP/1.1 connection per target, h11 over a
Trio TCP stream, for plain ``http://`` targets.

Why: httpx's layers (httpx, httpcore, h11 and their cancel scopes) cost about 1.1 ms of CPU per
probe, so 1,000 probes/s saturate a core. Speaking h11 directly over ``trio.open_tcp_stream``
does the same exchange with a fraction of the work (docs/probing.md has the measured figures).
It covers what a plain probe needs: any method, headers, a body, auth and ``Host`` as plain
headers. What needs httpx (TLS, redirects, a caller's own client) stays on httpx: the probe
decides which (see ``HTTPProbe``).

A connection is reused while h11 allows it (both sides kept it alive and the exchange finished),
checked for a server-side close before reuse (an idle socket that is readable has been closed
or sent something unasked: either way it is not reused), and dropped on any error or
cancellation: the next probe opens a new one. A response body is read up to
:data:`MAX_BODY_BYTES` (the ``max_body_bytes`` option); h11 bounds the header block (16 KiB);
at most :data:`MAX_INFORMATIONAL` informational (1xx) responses precede the answer. A server
that sends bytes past its response (an unasked second one) loses the connection.
"""

from __future__ import annotations

import h11
import trio

from ._httpbody import MAX_BODY_BYTES as _DEFAULT_MAX_BODY
from ._phases import Phase, enter_phase
from ._urls import host_name_problem

__all__ = ["MAX_BODY_BYTES", "MAX_INFORMATIONAL", "LeanConnection", "LeanError", "LeanResponse"]

#: The largest response body the lean path reads by default; a larger one fails the probe.
MAX_BODY_BYTES = _DEFAULT_MAX_BODY
_READ_SIZE = 65536
#: Informational (1xx) responses accepted before the final one; more fail the exchange. Real
#: servers send one (100 Continue, 103 Early Hints) or two.
MAX_INFORMATIONAL = 8


class LeanError(Exception):
    """A failed exchange; ``kind`` is named like httpx's exception class for the same failure
    (``ConnectError``, ``ReadError``, ``WriteError``, ``RemoteProtocolError``), so errors read
    the same on both paths."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def describe(self) -> str:
        message = str(self)
        return f"{self.kind}: {message}" if message else self.kind


class LeanResponse:
    """A response read in full, and the phase times of its exchange (seconds)."""

    __slots__ = ("content", "headers", "new_connection", "phases", "reason_phrase", "status_code")

    def __init__(
        self,
        status_code: int,
        reason_phrase: str,
        headers: list[tuple[bytes, bytes]],
        content: bytes,
        phases: dict[str, float],
        new_connection: bool,
    ) -> None:
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self.content = content
        self.phases = phases
        self.new_connection = new_connection


class LeanConnection:
    """A target's connection: ``host``/``port`` to connect to and the request line's target."""

    __slots__ = ("_conn", "_stream", "host", "max_body", "path", "port")

    def __init__(self, host: str, port: int, path: bytes, max_body: int = MAX_BODY_BYTES) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.max_body = max_body
        self._stream: trio.SocketStream | None = None
        self._conn: h11.Connection | None = None

    def _drop(self) -> None:
        # Synchronous, so it also works while the probe is being cancelled.
        stream, self._stream, self._conn = self._stream, None, None
        if stream is not None:
            stream.socket.close()

    async def aclose(self) -> None:
        self._drop()
        await trio.lowlevel.checkpoint()

    async def _connect(self) -> tuple[trio.SocketStream, h11.Connection]:
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            # Trio's own summary ("all attempts to connect to host:port failed"): httpx's words.
            raise LeanError("ConnectError", str(exc)) from None
        except UnicodeError:
            # The resolver's IDNA encoding refused the name (an empty or over-long label).
            problem = host_name_problem(self.host) or f"cannot encode host name {self.host!r}"
            raise LeanError("ConnectError", problem) from None
        self._stream, self._conn = stream, h11.Connection(h11.CLIENT)
        return stream, self._conn

    async def request(
        self, method: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> LeanResponse:
        """One exchange; :class:`LeanError` on failure. The connection is dropped on any error
        or cancellation, so a half-finished exchange is never reused."""
        done = False
        try:
            response = await self._exchange(method, headers, body)
            done = True
            return response
        finally:
            if not done:
                self._drop()

    async def _exchange(
        self, method: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> LeanResponse:
        phases: dict[str, float] = {}
        stream, conn = self._stream, self._conn
        if stream is not None and stream.socket.is_readable():
            self._drop()  # closed by the server while idle (or it sent unasked data)
            stream = conn = None
        new = stream is None or conn is None
        start = trio.current_time()
        if stream is None or conn is None:
            enter_phase(Phase.CONNECT)
            stream, conn = await self._connect()
            sent_at = trio.current_time()
            phases["connect"] = sent_at - start
            start = sent_at
        try:
            data = conn.send(h11.Request(method=method, target=self.path, headers=headers))
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise LeanError("LocalProtocolError", str(exc)) from None
        enter_phase(Phase.SEND)
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise LeanError("WriteError", _os_message(exc)) from None
        sent = trio.current_time()
        phases["send"] = sent - start
        enter_phase(Phase.WAIT)
        event = await self._response(stream, conn)
        if not isinstance(event, h11.Response):
            raise LeanError("RemoteProtocolError", "no response from the server")
        headed = trio.current_time()
        phases["ttfb"] = headed - sent
        enter_phase(Phase.RECEIVE)
        chunks: list[bytes] = []
        size = 0
        while True:
            part = await self._next(stream, conn)
            if isinstance(part, h11.Data):
                size += len(part.data)
                if size > self.max_body:
                    raise LeanError(
                        "ReadError", f"response body larger than the {self.max_body}-byte limit"
                    )
                chunks.append(bytes(part.data))
            elif isinstance(part, h11.EndOfMessage):
                break
        phases["transfer"] = trio.current_time() - headed
        if (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
        ):
            conn.start_next_cycle()
        else:
            # h11 says no keep-alive (e.g. Connection: close, HTTP/1.0), or the server sent
            # bytes past the response (a second, unasked one): never taken for the next answer.
            self._drop()
        return LeanResponse(
            event.status_code,
            event.reason.decode("ascii", errors="ignore"),  # as httpx decodes it
            event.headers.raw_items(),
            b"".join(chunks),
            phases,
            new,
        )

    async def _response(self, stream: trio.SocketStream, conn: h11.Connection) -> object:
        """The response's head, after at most :data:`MAX_INFORMATIONAL` informational (1xx)
        ones, with a checkpoint after each: a target sending ``100 Continue`` in a loop must
        neither hold the event loop nor keep the probe going."""
        for _ in range(MAX_INFORMATIONAL + 1):
            event = await self._next(stream, conn)
            if not isinstance(event, h11.InformationalResponse):
                return event
            await trio.lowlevel.checkpoint()
        raise LeanError(
            "RemoteProtocolError",
            f"more than {MAX_INFORMATIONAL} informational (1xx) responses to one request",
        )

    async def _next(self, stream: trio.SocketStream, conn: h11.Connection) -> object:
        """The next response event, reading as needed (informational ones included)."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise LeanError("RemoteProtocolError", str(exc)) from None
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(_READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise LeanError("ReadError", _os_message(exc)) from None
                if not data and conn.their_state is h11.SEND_RESPONSE:
                    # httpx's words for the same thing.
                    raise LeanError(
                        "RemoteProtocolError", "Server disconnected without sending a response."
                    )
                try:
                    conn.receive_data(data)
                except h11.RemoteProtocolError as exc:
                    raise LeanError("RemoteProtocolError", str(exc)) from None
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise LeanError(
                    "RemoteProtocolError", "Server disconnected without sending a response."
                )
            return event


def _os_message(exc: BaseException) -> str:
    """The OS's words (``Connection reset by peer``), which Trio wraps in a BrokenResourceError:
    the first message down the causes, as the httpx path reports it."""
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.strerror:
            return f"[Errno {cause.errno}] {cause.strerror}"
        cause = cause.__cause__ or cause.__context__
    return str(exc)
