"""One HTTP/1.1 request given to an ASGI app: read within limits, answered, or refused.

:mod:`trioprobe._asgi` decides which connections are served and for how long; this module is
what happens on one of them, request by request: the head and body read (refusing what a proxy
could frame differently), the ASGI ``http`` scope and messages bridged to h11, and the error
replies a bad request or a failing app gets.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final
from urllib.parse import unquote

import h11
import trio

from ._asgi_app import ASGIApp, Scope
from ._http11 import READ_SIZE, HTTP11Connection, RemoteProtocolError

#: Request body; more is answered 413. These apps read no body at all.
MAX_BODY_BYTES: Final = 64 * 1024

_RECEIVE_BYTES: Final = READ_SIZE
# After an error reply: how long and how much to read before closing (see _linger).
_LINGER_SECONDS: Final = 1.0
_LINGER_BYTES: Final = 256 * 1024


class BadRequest(Exception):
    """A request refused before the app sees it; ``status`` is the answer (400, 413)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def read_request(http: HTTP11Connection) -> h11.Request | None:
    """The next request's head, or ``None`` if the client ended the connection instead."""
    event = await http.next_event()
    if isinstance(event, h11.Request):
        refuse_ambiguous_framing(event)
        return event
    # ConnectionClosed between requests, or PAUSED after one we closed.
    return None


async def read_body(http: HTTP11Connection) -> bytes:
    """The request's whole body, up to ``MAX_BODY_BYTES``."""
    body = bytearray()
    while True:
        event = await http.next_event()
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise BadRequest(400, f"unexpected {type(event).__name__} in the request body")


async def call_app(app: ASGIApp, http: HTTP11Connection, request: h11.Request, body: bytes) -> None:
    """Hand ``request`` to ``app`` and send its answer; a 500 if it fails before answering."""
    scope = http_scope(http.stream, request)
    head = request.method == b"HEAD"
    done = trio.Event()
    received = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            await http.send(h11.Response(status_code=message["status"], headers=headers))
        elif kind == "http.response.body":
            chunk = bytes(message.get("body", b""))
            events: list[h11.Event] = [] if head or not chunk else [h11.Data(data=chunk)]
            if not message.get("more_body", False):
                events.append(h11.EndOfMessage())
                done.set()
            await http.send(*events)
        else:
            raise RuntimeError(f"ASGI app sent an unexpected {kind!r} message")

    try:
        await app(scope, receive, send)
    except Exception:
        if http.conn.our_state is h11.SEND_RESPONSE:
            await _send_500(http)
        raise
    if http.conn.our_state is h11.SEND_RESPONSE:
        await _send_500(http)
        raise RuntimeError("ASGI app returned without answering")
    if not done.is_set():
        raise RuntimeError("ASGI app returned in the middle of its response")


async def _send_500(http: HTTP11Connection) -> None:
    headers = [("content-length", "0"), ("connection", "close")]
    await http.send(h11.Response(status_code=500, headers=headers), h11.EndOfMessage())


async def send_error(http: HTTP11Connection, exc: RemoteProtocolError | BadRequest) -> None:
    """Answer a bad request with its status and reason (unless a response has begun), and
    linger so the client can read it."""
    status = exc.status if isinstance(exc, BadRequest) else exc.status_hint
    if http.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
        body = f"{exc}\n".encode()
        headers = [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        await http.send(
            h11.Response(status_code=status, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )
        await _linger(http.stream)


def http_scope(stream: trio.SocketStream, request: h11.Request) -> Scope:
    """The ASGI ``http`` scope of ``request`` received on ``stream``."""
    raw_path, _, query = request.target.partition(b"?")
    sockname = stream.socket.getsockname()
    peername = stream.socket.getpeername()
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.http_version.decode("ascii"),
        "method": request.method.decode("ascii"),
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(name, value) for name, value in request.headers],
        "client": (peername[0], peername[1]),
        "server": (sockname[0], sockname[1]),
    }


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then read (and drop) what the client still sends, briefly and boundedly.

    Closing a socket with unread bytes in it makes the kernel answer with a reset, which may
    destroy our error reply before the client has read it; reading a little first lets the
    reply arrive. Bounded in bytes and time, so an attacker gains nothing by sending more.
    """
    with trio.move_on_after(_LINGER_SECONDS):
        await stream.send_eof()
        left = _LINGER_BYTES
        while left > 0 and (chunk := await stream.receive_some(_RECEIVE_BYTES)):
            left -= len(chunk)


def refuse_ambiguous_framing(request: h11.Request) -> None:
    """Refuse a request framed both by ``Content-Length`` and ``Transfer-Encoding``.

    h11 follows RFC 9112 §6.3 and frames such a body as chunked; a proxy in front of us might
    have framed it by its length, so the rest of the body would be a second, smuggled request
    to us. §6.1 says a server may reject it, and must close the connection after answering it:
    there is no honest client that sends both.
    """
    names = {name for name, _ in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        raise BadRequest(400, "both Content-Length and Transfer-Encoding (RFC 9112 section 6.1)")
