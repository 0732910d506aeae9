"""The lean HTTP/1.1 client: one keep-alive connection on a raw socket, for plain ``http://``
targets of the ``http`` probe type and the Prober's peers (:mod:`trioprobe.probing._transport`).

Why not httpx: its layers (httpx, httpcore, h11 and their cancel scopes) cost about 1.1 ms of
CPU per probe. Why not even h11 over Trio's ``SocketStream`` for every reply: that still cost
~470 Python calls per probe, and the Prober's RTT samples half a millisecond more than a raw
socket (docs/probing.md): h11 encoding the same request every time and parsing the reply, a
scheduler round after the send (Trio's ``send_all`` yields even when the kernel took the
bytes), a failed ``recv`` before the wait.

So the request is encoded once per connection owner (by h11, so its bytes are exactly what h11
would send), sent with one non-blocking ``send``, and the task parks once in ``wait_readable``
until the reply arrives: one wake-up, as a blocking client has. A reply that arrives whole with a
plain ``Content-Length`` framing (a health endpoint's usually does) is parsed here with a regex;
anything else (split across reads, chunked, 1xx, ``Connection`` headers, HTTP/1.0, a body over
the limit, bytes past the body) is handed, with the bytes read so far, to h11, which reads the
rest: h11 stays the judge of everything but the one common shape.

A connection is reused while both sides keep it alive, checked for a server-side close before
reuse (an idle socket that is readable has been closed or sent something unasked: either way it
is not reused), and dropped on any error or cancellation: the next exchange opens a new one. A
response body is read up to ``max_body`` bytes (``BodyTooLarge`` past it); h11 bounds the header
block (16 KiB); at most :data:`MAX_INFORMATIONAL` informational (1xx) responses precede the
answer. A server that sends bytes past its response (an unasked second one) loses the connection.

An exchange returns the transport-neutral :class:`~trioprobe._exchange.Exchange` (as the httpx
path does), with the phases ``connect`` (when it opened the connection), ``send``, ``ttfb`` and
``transfer``, and fails with the typed errors of :mod:`trioprobe._http11` (httpx's exception
classes of the same names), or ``BodyTooLarge``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from typing import Final

import h11
import trio

from ._exchange import Exchange
from ._http11 import (
    DISCONNECTED,
    MAX_HEAD_BYTES,
    READ_SIZE,
    ConnectError,
    HTTP11Connection,
    LocalProtocolError,
    ReadError,
    RemoteProtocolError,
    WriteError,
    os_message,
)
from ._httpbody import MAX_BODY_BYTES as _DEFAULT_MAX_BODY
from ._httpbody import BodyTooLarge
from ._phases import Phase, enter_phase
from ._tcp import open_tcp_stream
from ._urls import host_name_problem

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_INFORMATIONAL",
    "H11Client",
    "parse_whole",
    "receive_body",
    "receive_head",
]

#: The largest response body the lean path reads by default; a larger one fails the probe.
MAX_BODY_BYTES = _DEFAULT_MAX_BODY
#: Informational (1xx) responses accepted before the final one; more fail the exchange. Real
#: servers send one (100 Continue, 103 Early Hints) or two.
MAX_INFORMATIONAL = 8

# The one shape parsed here: an HTTP/1.1 status line and header fields, every name a token.
_HEAD: Final = re.compile(
    rb"HTTP/1\.1 ([2-5]\d\d) ([^\r\n]*)\r\n((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*\r\n)*)\r\n"
)
# Each header field of a head _HEAD matched, its value stripped as h11 strips it.
_FIELD: Final = re.compile(rb"([^:]+):[ \t]*([^\r\n]*?)[ \t]*\r\n")
# Header fields that change the framing or the connection's fate: h11 decides those, except
# one plain Content-Length (group 1 non-empty for it).
_FRAMING: Final = re.compile(
    rb"^(?:(content-length)|transfer-encoding|connection|keep-alive|upgrade|trailer)"
    rb":[ \t]*([^\r\n]*?)[ \t]*\r\n",
    re.IGNORECASE | re.MULTILINE,
)
_Reply = tuple[int, str, list[tuple[bytes, bytes]], bytes]
# Content-Length digits parsed here: more than a whole reply in one read can ever frame.
_LENGTH_DIGITS: Final = 12


class H11Client:
    """One target's keep-alive connection for one fixed request (``method``, ``path``,
    ``headers``, ``body``), sent as often as :meth:`exchange` is called.

    Not shared between tasks: one probe task uses it, one exchange at a time.
    """

    __slots__ = ("_keep", "_refused", "_request", "_sock", "host", "max_body", "port")

    def __init__(
        self,
        host: str,
        port: int,
        path: bytes,
        max_body: int = MAX_BODY_BYTES,
        *,
        method: bytes = b"GET",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.max_body = max_body
        self._sock: socket.socket | None = None
        # Encoded once and kept: the same bytes go out every time, and nothing else of the
        # request is kept per target. A request h11 refuses fails each exchange, as sending it
        # would, in h11's words.
        self._refused = ""
        try:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method=method, target=path, headers=list(headers))
            events: list[h11.Event] = [request]
            if body:
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            self._request = b"".join(conn.send(event) or b"" for event in events)
        except h11.LocalProtocolError as exc:
            self._request, self._refused = b"", str(exc)
        # False when our own request says Connection: close.
        self._keep = bool(self._request) and conn.our_state is h11.DONE

    @property
    def connected(self) -> bool:
        """Whether a connection is kept for the next exchange."""
        return self._sock is not None

    def request_bytes(self) -> bytes:
        """The request as h11 encodes it (what goes on the wire); ``LocalProtocolError`` when
        h11 refused it (a header value with a line break, a body longer than its length)."""
        if not self._request:
            raise LocalProtocolError(self._refused)
        return self._request

    def _drop(self) -> None:
        # Synchronous, so it also works while the probe is being cancelled. A task still waiting
        # on the socket (closed from another task) is woken, not left parked on a dead fd.
        sock, self._sock = self._sock, None
        if sock is not None:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def aclose(self) -> None:
        self._drop()
        await trio.lowlevel.checkpoint()

    async def exchange(self) -> Exchange:
        """One exchange; an :class:`~trioprobe._http11.HTTP11Error` (or ``BodyTooLarge``) on
        failure. The connection is dropped on any error or cancellation, so a half-finished
        exchange is never reused."""
        done = False
        try:
            exchange = await self._exchange()
            done = True
            return exchange
        finally:
            if not done:
                self._drop()

    async def _exchange(self) -> Exchange:
        request = self._request or self.request_bytes()  # raises when there is none
        clock = trio.lowlevel.current_clock()
        sock = self._sock
        if sock is not None and _closed_while_idle(sock):
            self._drop()  # closed by the server while idle (or it sent unasked data)
            sock = None
        phases: dict[str, float] = {}
        new = sock is None
        start = clock.current_time()
        if sock is None:
            enter_phase(Phase.CONNECT)
            sock = self._sock = await self._connect()
            now = clock.current_time()
            phases["connect"] = now - start
            start = now
        enter_phase(Phase.SEND)
        await _send(sock, request)
        sent = clock.current_time()
        phases["send"] = sent - start
        enter_phase(Phase.WAIT)
        data = await _receive(sock)
        reply = parse_whole(data, self.max_body)
        if reply is None:
            reply, headed = await self._with_h11(sock, data, clock)
        else:
            headed = clock.current_time()
            if not self._keep:
                self._drop()  # we asked the server to close it
        phases["ttfb"] = headed - sent
        phases["transfer"] = clock.current_time() - headed
        status, reason, headers, body = reply
        return Exchange(
            status,
            reason,
            headers,
            body,
            phases,
            new_connections=int(new),
            new_connection=new,
            decode_pending=True,
        )

    async def _with_h11(
        self, sock: socket.socket, data: bytes, clock: trio.abc.Clock
    ) -> tuple[_Reply, float]:
        """Finish the exchange with h11, from the bytes already read; the reply and when its
        head was complete."""
        conn = _client_after(self._request)
        http = HTTP11Connection(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), h11.CLIENT)
        http.conn = conn
        try:
            conn.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(str(exc), exc.error_status_hint) from None
        head = await receive_head(http)
        headed = clock.current_time()
        enter_phase(Phase.RECEIVE)
        body = await receive_body(http, self.max_body)
        if not http.reusable:
            # h11 says no keep-alive (Connection: close, HTTP/1.0), or the server sent bytes
            # past the response (a second, unasked one): never taken for the next answer.
            self._drop()
        reason = head.reason.decode("ascii", errors="ignore")  # as httpx decodes it
        return (head.status_code, reason, head.headers.raw_items(), body), headed

    async def _connect(self) -> socket.socket:
        try:
            stream = await open_tcp_stream(self.host, self.port)
        except OSError as exc:
            # Trio's own summary ("all attempts to connect to host:port failed"): httpx's words.
            raise ConnectError(str(exc)) from None
        except UnicodeError:
            # The resolver's IDNA encoding refused the name (an empty or over-long label).
            problem = host_name_problem(self.host) or f"cannot encode host name {self.host!r}"
            raise ConnectError(problem) from None
        # Trio set TCP_NODELAY; from here on the socket is driven without its stream layer.
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        return sock


def _client_after(request: bytes) -> h11.Connection:
    """A client h11 connection in the state of having sent ``request``, our own bytes read back
    by an h11 server (only the fallback needs one, so no target keeps h11's events around)."""
    server = h11.Connection(h11.SERVER, max_incomplete_event_size=len(request) + 1)
    server.receive_data(request)
    client = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
    while True:
        event = server.next_event()
        client.send(event)  # type: ignore[arg-type]
        if isinstance(event, h11.EndOfMessage):
            return client


def _closed_while_idle(sock: socket.socket) -> bool:
    """Whether an idle kept connection was closed by the peer (or got unasked bytes)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False  # nothing to read: still open
    except OSError:
        return True
    return True  # end of stream, or bytes nobody asked for


async def _send(sock: socket.socket, data: bytes) -> None:
    """Send all of ``data``; the kernel takes a small request at once, with no wait."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            try:
                await trio.lowlevel.wait_writable(sock)
            except trio.ClosedResourceError:
                raise WriteError("the connection was closed") from None
        except OSError as exc:
            raise WriteError(os_message(exc)) from None


async def _receive(sock: socket.socket) -> bytes:
    """The first bytes of the reply: one park in ``wait_readable``, one ``recv``."""
    while True:
        try:
            await trio.lowlevel.wait_readable(sock)
        except trio.ClosedResourceError:
            raise ReadError("the connection was closed") from None
        try:
            data = sock.recv(READ_SIZE)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise ReadError(os_message(exc)) from None
        if not data:
            raise RemoteProtocolError(DISCONNECTED)
        return data


def parse_whole(data: bytes, max_body: int = MAX_BODY_BYTES) -> _Reply | None:
    """``(status, reason, headers, body)`` of a whole reply framed by one ``Content-Length`` of
    at most ``max_body`` bytes, with nothing after it; None for anything else (h11 reads it)."""
    # A head past h11's bound is h11's to refuse; and the regex never scans more than that.
    end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
    head = _HEAD.match(data, 0, end + 4) if end >= 0 else None
    if head is None:
        return None
    # Two regex passes over the head whatever its size, no Python step per header field.
    block = head.group(3)
    length = -1
    for is_length, value in _FRAMING.findall(block):
        # A length of more digits than any body here has is h11's to refuse: int() would
        # raise ValueError past 4,300 digits, a traceback for a hostile peer.
        if not is_length or length >= 0 or not value.isdigit() or len(value) > _LENGTH_DIGITS:
            return None
        length = int(value)
    status = int(head.group(1))
    body = data[head.end() :]
    if length < 0 or len(body) != length or length > max_body or status in (204, 304):
        return None
    reason = head.group(2).decode("ascii", errors="ignore")
    return status, reason, _FIELD.findall(block), body


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
