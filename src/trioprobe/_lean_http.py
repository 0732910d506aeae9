"""The ``http`` probe's lean transport: one keep-alive HTTP/1.1 connection per target, h11 over a
Trio TCP stream (:mod:`trioprobe._http11`), for plain ``http://`` targets.

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

An exchange returns the transport-neutral :class:`~trioprobe._exchange.Exchange` (as the httpx
path does) and fails with the typed errors of :mod:`trioprobe._http11` (httpx's exception
classes of the same names), or ``BodyTooLarge`` for a body over the limit.
"""

from __future__ import annotations

import h11
import trio

from ._exchange import Exchange
from ._http11 import DISCONNECTED, ConnectError, HTTP11Connection, RemoteProtocolError
from ._httpbody import MAX_BODY_BYTES as _DEFAULT_MAX_BODY
from ._httpbody import BodyTooLarge
from ._phases import Phase, enter_phase
from ._urls import host_name_problem

__all__ = ["MAX_BODY_BYTES", "MAX_INFORMATIONAL", "H11Client", "receive_body", "receive_head"]

#: The largest response body the lean path reads by default; a larger one fails the probe.
MAX_BODY_BYTES = _DEFAULT_MAX_BODY
#: Informational (1xx) responses accepted before the final one; more fail the exchange. Real
#: servers send one (100 Continue, 103 Early Hints) or two.
MAX_INFORMATIONAL = 8


class H11Client:
    """A target's connection: ``host``/``port`` to connect to and the request line's target."""

    __slots__ = ("_http", "host", "max_body", "path", "port")

    def __init__(self, host: str, port: int, path: bytes, max_body: int = MAX_BODY_BYTES) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.max_body = max_body
        self._http: HTTP11Connection | None = None

    @property
    def connected(self) -> bool:
        """Whether a connection is kept for the next exchange."""
        return self._http is not None

    def _drop(self) -> None:
        # Synchronous, so it also works while the probe is being cancelled.
        http, self._http = self._http, None
        if http is not None:
            http.stream.socket.close()

    async def aclose(self) -> None:
        self._drop()
        await trio.lowlevel.checkpoint()

    async def _connect(self) -> HTTP11Connection:
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            # Trio's own summary ("all attempts to connect to host:port failed"): httpx's words.
            raise ConnectError(str(exc)) from None
        except UnicodeError:
            # The resolver's IDNA encoding refused the name (an empty or over-long label).
            problem = host_name_problem(self.host) or f"cannot encode host name {self.host!r}"
            raise ConnectError(problem) from None
        self._http = HTTP11Connection(stream, h11.CLIENT)
        return self._http

    async def request(
        self, method: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> Exchange:
        """One exchange; an :class:`~trioprobe._http11.HTTP11Error` (or ``BodyTooLarge``) on
        failure. The connection is dropped on any error or cancellation, so a half-finished
        exchange is never reused."""
        done = False
        try:
            exchange = await self._exchange(method, headers, body)
            done = True
            return exchange
        finally:
            if not done:
                self._drop()

    async def _exchange(
        self, method: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> Exchange:
        phases: dict[str, float] = {}
        http = self._http
        if http is not None and http.stream.socket.is_readable():
            self._drop()  # closed by the server while idle (or it sent unasked data)
            http = None
        new = http is None
        start = trio.current_time()
        if http is None:
            enter_phase(Phase.CONNECT)
            http = await self._connect()
            sent_at = trio.current_time()
            phases["connect"] = sent_at - start
            start = sent_at
        request = h11.Request(method=method, target=self.path, headers=headers)
        enter_phase(Phase.SEND)
        if body:
            await http.send(request, h11.Data(data=body), h11.EndOfMessage())
        else:
            await http.send(request, h11.EndOfMessage())
        sent = trio.current_time()
        phases["send"] = sent - start
        enter_phase(Phase.WAIT)
        head = await receive_head(http)
        headed = trio.current_time()
        phases["ttfb"] = headed - sent
        enter_phase(Phase.RECEIVE)
        content = await receive_body(http, self.max_body)
        phases["transfer"] = trio.current_time() - headed
        if http.reusable:
            http.start_next_cycle()
        else:
            # h11 says no keep-alive (e.g. Connection: close, HTTP/1.0), or the server sent
            # bytes past the response (a second, unasked one): never taken for the next answer.
            self._drop()
        return Exchange(
            head.status_code,
            head.reason.decode("ascii", errors="ignore"),  # as httpx decodes it
            head.headers.raw_items(),
            content,
            phases,
            new_connections=int(new),
            new_connection=new,
            decode_pending=True,
        )


async def receive_head(http: HTTP11Connection) -> h11.Response:
    """The response's head, after at most :data:`MAX_INFORMATIONAL` informational (1xx)
    ones, with a checkpoint after each: a target sending ``100 Continue`` in a loop must
    neither hold the event loop nor keep the probe going."""
    for _ in range(MAX_INFORMATIONAL + 1):
        event = await http.next_event()
        if isinstance(event, h11.Response):
            return event
        if not isinstance(event, h11.InformationalResponse):
            raise RemoteProtocolError(DISCONNECTED)  # ConnectionClosed
        await trio.lowlevel.checkpoint()
    raise RemoteProtocolError(
        f"more than {MAX_INFORMATIONAL} informational (1xx) responses to one request"
    )


async def receive_body(http: HTTP11Connection, max_body: int) -> bytes:
    """The response's body, read to its end; ``BodyTooLarge`` past ``max_body`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await http.next_event()
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > max_body:
                raise BodyTooLarge(max_body)
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed):
            raise RemoteProtocolError(DISCONNECTED)
