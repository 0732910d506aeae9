"""The health endpoint: etcd's ``/raft/probing`` reply as an ASGI app, and its HTTP server.

etcd peers answer ``GET /raft/probing`` with ``{"OK":true,"Now":"<RFC 3339, nanoseconds>"}`` and a
newline (``xiang90/probing.NewHandler``). Serving the same shape lets an etcd-style prober (ours or
etcd's own) measure round-trip time and clock difference against any trioprobe process.

The app is plain ASGI 3 so any ASGI server can host it; :func:`serve_health` hosts it with
trioprobe's own small h11 server (``trioprobe._asgi``), which contains a hostile client to its
own connection (see docs/probing.md, "Hostile clients").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial

import attrs
import trio

from .._asgi import ASGIApp, HTTPServerStats, Receive, Scope, Send, answer_lifespan, serve_asgi
from .._groups import open_nursery

__all__ = ["DEFAULT_PATH", "HealthApp", "format_rfc3339_nano", "health_app", "serve_health"]

DEFAULT_PATH = "/raft/probing"
"""Where etcd serves its probing handler on the peer listener."""


def format_rfc3339_nano(ns: int) -> str:
    """Format ``ns`` nanoseconds since the epoch as RFC 3339 in UTC with nine fractional digits.

    Go's ``time.Time`` JSON decoder (what etcd's prober uses) accepts any number of fractional
    digits, so a fixed width is as interoperable as Go's trimmed form and cheaper to produce.
    """
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


_NOT_FOUND = b"404 page not found\n"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]


@attrs.frozen
class HealthApp:
    """ASGI app answering any method on ``path`` with etcd's health reply; other paths get 404.

    ``wall_clock_ns`` is injectable so tests can pin the reported ``Now``. Lifespan events are
    acknowledged (so servers that require lifespan support start cleanly); websocket connections
    are refused, which servers turn into a 403.
    """

    path: str = DEFAULT_PATH
    wall_clock_ns: Callable[[], int] = time.time_ns

    def body(self) -> bytes:
        """The reply body at this instant: compact JSON, newline-terminated like Go's encoder."""
        now = format_rfc3339_nano(self.wall_clock_ns())
        return json.dumps({"OK": True, "Now": now}, separators=(",", ":")).encode() + b"\n"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            # Any method, like Go's handler; the request body (if any) is ignored unread.
            if scope["path"] == self.path:
                status, headers, body = 200, _JSON_HEADERS, self.body()
            else:
                status, headers, body = 404, _TEXT_HEADERS, _NOT_FOUND
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif kind == "lifespan":
            await answer_lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            raise ValueError(f"health app: unsupported ASGI scope type {kind!r}")


health_app = HealthApp()
"""The app with etcd's defaults: ``/raft/probing`` and the real wall clock."""


async def serve_health(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    path: str = DEFAULT_PATH,
    app: ASGIApp | None = None,
    stats: HTTPServerStats | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the health endpoint until cancelled.

    Reports the endpoint's full URL (``http://host:port/path``, with the real port when ``port``
    is 0) through ``task_status.started()``. Cancellation is the way to stop it. What clients
    did wrong is counted in ``stats`` (pass one in to read it) and logged rate-limited.
    """
    if not path.startswith("/"):
        raise ValueError(f"health path must start with '/': {path!r}")
    asgi_app = app if app is not None else HealthApp(path=path)
    async with open_nursery() as nursery:
        base_url = await nursery.start(partial(serve_asgi, asgi_app, host, port, stats=stats))
        task_status.started(base_url + path)
