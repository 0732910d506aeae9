"""The Prober's GET over a plain ``http://`` keep-alive connection, on a raw socket.

Why not the ``http`` probe type's :class:`~trioprobe._lean_http.H11Client`: every microsecond
between the request leaving and the reply being parsed lands in the RTT sample, and SRTT is
compared with Go's ``xiang90/probing`` and with etcd's own warnings. Through Trio's
``SocketStream`` and h11 one probe cost ~0.5 ms more than a raw socket on loopback (measured
beside etcd 3.4; docs/probing.md): h11 encoding the same request and parsing the reply, a
scheduler round after the send (Trio's ``send`` yields even when the kernel took the bytes), a
failed ``recv`` before the wait, and an extra ``poll`` to see whether the idle socket was closed.

So the request is encoded once (by h11, so its bytes are exactly what h11 would send), sent
with one non-blocking ``send``, and the task parks once in ``wait_readable`` until the reply
arrives: one wake-up, as a blocking client has. A reply that arrives whole with a plain
``Content-Length`` framing (etcd's always does) is parsed here with a regex; anything else
(split across reads, chunked, 1xx, ``Connection`` headers, HTTP/1.0, bytes past the body) is
handed, with the bytes read so far, to h11, which reads the rest: h11 stays the judge of
everything but the one common shape.
"""

from __future__ import annotations

import re
import socket
from typing import Final

import h11
import trio

from .._exchange import Exchange
from .._http11 import (
    DISCONNECTED,
    READ_SIZE,
    ConnectError,
    HTTP11Connection,
    ReadError,
    RemoteProtocolError,
    WriteError,
    os_message,
)
from .._httpbody import MAX_BODY_BYTES
from .._lean_http import receive_body, receive_head
from .._urls import host_name_problem

__all__ = ["ProbeConnection"]

# The one shape parsed here: an HTTP/1.1 status line and header fields, every name a token.
_HEAD: Final = re.compile(
    rb"HTTP/1\.1 ([2-5]\d\d) ([^\r\n]*)\r\n((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*\r\n)*)\r\n"
)
# Header fields that change the framing or the connection's fate: h11 decides those.
_H11_DECIDES: Final = frozenset(
    (b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"trailer")
)


class ProbeConnection:
    """One endpoint's keep-alive connection for one fixed ``GET`` (the Prober's request).

    Not shared between tasks: one probe id's task uses it, one exchange at a time.
    """

    __slots__ = ("_request", "_sock", "host", "max_body", "port")

    def __init__(
        self,
        host: str,
        port: int,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.max_body = max_body
        self._request = h11.Request(method=b"GET", target=path, headers=headers)
        self._sock: socket.socket | None = None

    @property
    def connected(self) -> bool:
        """Whether a connection is kept for the next exchange."""
        return self._sock is not None

    def request_bytes(self) -> bytes:
        """The request as h11 encodes it (what goes on the wire)."""
        return _h11_after_request(self._request)[1]

    def _drop(self) -> None:
        # Synchronous, so it also works while the probe is being cancelled.
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    async def aclose(self) -> None:
        self._drop()
        await trio.lowlevel.checkpoint()

    async def get(self, request: bytes) -> Exchange:
        """One exchange of ``request`` (:meth:`request_bytes`); an
        :class:`~trioprobe._http11.HTTP11Error` or ``BodyTooLarge`` on failure. The connection
        is dropped on any error or cancellation, so a half-finished exchange is never reused."""
        done = False
        try:
            exchange = await self._exchange(request)
            done = True
            return exchange
        finally:
            if not done:
                self._drop()

    async def _exchange(self, request: bytes) -> Exchange:
        sock = self._sock
        if sock is not None and _closed_while_idle(sock):
            self._drop()
            sock = None
        phases: dict[str, float] = {}
        if sock is None:
            start = trio.current_time()
            sock = self._sock = await self._connect()
            phases["connect"] = trio.current_time() - start
        await _send(sock, request)
        data = await _receive(sock)
        parsed = _parse_whole(data)
        if parsed is not None and len(parsed[3]) <= self.max_body:
            status, reason, headers, body = parsed
        else:
            status, reason, headers, body = await self._with_h11(sock, data)
        return Exchange(
            status,
            reason,
            headers,
            body,
            phases,
            new_connections=len(phases),
            new_connection=bool(phases),
            decode_pending=True,
        )

    async def _with_h11(
        self, sock: socket.socket, data: bytes
    ) -> tuple[int, str, list[tuple[bytes, bytes]], bytes]:
        """Finish the exchange with h11, from the bytes already read."""
        conn, _ = _h11_after_request(self._request)
        http = HTTP11Connection(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), h11.CLIENT)
        http.conn = conn
        try:
            conn.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(str(exc), exc.error_status_hint) from None
        head = await receive_head(http)
        body = await receive_body(http, self.max_body)
        if not http.reusable:
            # No keep-alive (Connection: close, HTTP/1.0), or bytes past the response (a
            # second, unasked one): never taken for the next answer.
            self._drop()
        reason = head.reason.decode("ascii", errors="ignore")
        return head.status_code, reason, head.headers.raw_items(), body

    async def _connect(self) -> socket.socket:
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise ConnectError(str(exc)) from None
        except UnicodeError:
            problem = host_name_problem(self.host) or f"cannot encode host name {self.host!r}"
            raise ConnectError(problem) from None
        # Trio set TCP_NODELAY; from here on the socket is driven without its stream layer.
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        return sock


def _h11_after_request(request: h11.Request) -> tuple[h11.Connection, bytes]:
    """A client h11 connection that has sent ``request`` (no body), and the bytes it sent."""
    conn = h11.Connection(h11.CLIENT)
    data = (conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    return conn, data


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
            await trio.lowlevel.wait_writable(sock)
        except OSError as exc:
            raise WriteError(os_message(exc)) from None


async def _receive(sock: socket.socket) -> bytes:
    """The first bytes of the reply: one park in ``wait_readable``, one ``recv``."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(READ_SIZE)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise ReadError(os_message(exc)) from None
        if not data:
            raise RemoteProtocolError(DISCONNECTED)
        return data


def _parse_whole(data: bytes) -> tuple[int, str, list[tuple[bytes, bytes]], bytes] | None:
    """``(status, reason, headers, body)`` of a whole reply framed by one ``Content-Length``,
    with nothing after it; None for anything else (h11 then reads it)."""
    head = _HEAD.match(data)
    if head is None:
        return None
    length = None
    headers: list[tuple[bytes, bytes]] = []
    for line in head.group(3).split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        lowered = name.lower()
        if lowered == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif lowered in _H11_DECIDES:
            return None
        headers.append((name, value))
    status = int(head.group(1))
    body = data[head.end() :]
    if length is None or len(body) != length or status in (204, 304):
        return None
    return status, head.group(2).decode("ascii", errors="ignore"), headers, body
