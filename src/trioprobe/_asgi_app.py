"""The app side of ASGI, as trioprobe's apps use it: the callable's types and two helpers.

The status page, ``/metrics``, the health endpoint, the alert API and the test servers are small
ASGI apps; what they need to be served by :func:`trioprobe._asgi.serve_asgi` is here, apart from
the server itself, so an app reads without the server's connection handling in view.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Receive", "Scope", "Send", "answer_lifespan", "send_response"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI ``lifespan`` scope: these apps have nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    *,
    slice_bytes: int | None = None,
) -> None:
    """Send a complete HTTP response with a ``Content-Length``.

    With ``slice_bytes``, the body goes out that many bytes at a time, so a connection holds
    one slice beyond ``body`` (which a large, shared body must not be copied whole for).
    """
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    if slice_bytes is None or len(body) <= slice_bytes:
        await send({"type": "http.response.body", "body": body})
        return
    # ASGI bodies are bytes: each slice is a copy, one slice at a time.
    for start in range(0, len(body), slice_bytes):
        more = start + slice_bytes < len(body)
        chunk = body[start : start + slice_bytes]
        await send({"type": "http.response.body", "body": chunk, "more_body": more})
