"""Hosting small ASGI apps (``/metrics``, the health endpoint, the demo's target) over HTTP/1.1.

The server is our own: h11 for the protocol (through :mod:`trioprobe._http11`, shared with the
client and the test servers), ``trio.serve_listeners`` for the sockets, about as
much code as the configuration Hypercorn needed. Hypercorn's Trio worker lets one client kill the
whole server: a malformed chunked body makes it send its 400 and its EOF from two tasks at once,
and the ``trio.BusyResourceError`` that follows escapes the connection handler and the listener's
nursery (``tests/probing/test_health.py`` has the attack). Hypercorn offers no hook to contain
a failing connection short of rebuilding its worker out of internal classes, and these apps need
none of its features (HTTP/2, websockets, TLS); the h11 server also costs a third of the CPU
per request (``trio-notes.md`` §2.1: 0.21 ms against 0.72 ms). See docs/probing.md, "Hostile
clients".

What a client can do to this server, and what it costs the others:

* every connection runs in its own task, and anything it raises other than cancellation is
  caught there, counted in :class:`HTTPServerStats` and logged at most once per 10 s per kind;
* a request (headers, body, the app's answer and sending it) must complete within
  ``request_timeout`` seconds once its first byte arrived (else: closed and counted), and a
  connection idle for as long before a request is closed quietly;
* headers are limited to ``MAX_HEADER_BYTES`` (431) and bodies to ``MAX_BODY_BYTES`` (413);
* out of file descriptors (``EMFILE``): the server holds ``FD_RESERVE`` spare descriptors from
  its start and gives one up to accept a connection (taking it back when the connection
  closes), so a process whose probes used every descriptor still answers its scrapes; with
  none left, it backs off (0.1 s doubling to 1 s), counts the failures and logs one line per
  10 s, never a traceback per attempt (trio.serve_listeners logs one every 0.1 s);
* at most ``max_connections`` connections are served at once. When they are all taken, a new
  client takes the slot of the connection idle the longest (no byte of a request in progress),
  one that never sent a request first, then a kept-alive one; if every connection is in the
  middle of a request, the new one is closed at once. So idle sockets, however many and however
  quickly re-opened, cannot lock a scraper out: they only shed each other.

This module is the server: the listeners, which connections are served, and for how long.
One request on a connection is :mod:`trioprobe._asgi_request`; what an app needs (the ASGI
types, ``answer_lifespan``, ``send_response``) is :mod:`trioprobe._asgi_app`, re-exported here.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import MutableMapping
from typing import Any, Final

import attrs
import h11
import trio

from ._asgi_app import ASGIApp as ASGIApp
from ._asgi_app import Receive as Receive
from ._asgi_app import Scope as Scope
from ._asgi_app import Send as Send
from ._asgi_app import answer_lifespan as answer_lifespan
from ._asgi_app import send_response as send_response
from ._asgi_request import MAX_BODY_BYTES as MAX_BODY_BYTES
from ._asgi_request import BadRequest, call_app, read_body, read_request, send_error
from ._groups import open_nursery
from ._http11 import HTTP11Connection, ReadError, RemoteProtocolError, WriteError
from ._ratelog import RateLimitedLog

__all__ = [
    "ASGIApp",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT",
    "FD_RESERVE",
    "HTTPServerStats",
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "serve_asgi",
]

log = logging.getLogger("trioprobe.http")

#: Request line plus headers; more is answered 431 (h11's own default is 16 KiB too).
MAX_HEADER_BYTES: Final = 16 * 1024
#: Seconds for one request from its first byte awaited to its last byte sent.
DEFAULT_REQUEST_TIMEOUT: Final = 10.0
#: Connections served at once; a scraper or prober needs one or two.
DEFAULT_MAX_CONNECTIONS: Final = 64

#: Spare file descriptors each server holds, to accept connections when the process has none.
FD_RESERVE: Final = 8

# accept() errors that mean "no resources now", as trio.serve_listeners lists them.
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_BACKOFF: Final = (0.1, 1.0)


@attrs.define
class HTTPServerStats:
    """What one :func:`serve_asgi` server saw (pass one in to read it while it runs)."""

    #: Connections accepted and served.
    connections: int = 0
    #: Requests answered by the app.
    requests: int = 0
    #: Requests that broke HTTP/1.1 or a size limit (answered 400/413/431 when still possible).
    bad_requests: int = 0
    #: Connections closed because a started request took longer than ``request_timeout``.
    timeouts: int = 0
    #: Connections closed at once because ``max_connections`` were open, none of them idle.
    rejected: int = 0
    #: Idle connections closed to make room for a new one (``max_connections`` were open).
    shed: int = 0
    #: Anything else a connection raised (an app error among them: answered 500 if possible).
    errors: int = 0
    #: ``accept`` failures for want of resources (``EMFILE``: out of file descriptors...).
    accept_errors: int = 0
    #: Connections accepted with a descriptor of the server's reserve (the process had none).
    accepted_from_reserve: int = 0


async def serve_asgi(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    stats: HTTPServerStats | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``task_status.started(url)`` once bound.

    ``url`` is ``http://host:port`` with the port actually bound. The app must answer the
    ``lifespan`` scope (see :func:`answer_lifespan`); its startup completes before ``started``.
    """
    server = _Server(
        app, request_timeout, max_connections, stats if stats is not None else HTTPServerStats()
    )
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        # Name the address: "[Errno 98] Address already in use: '127.0.0.1:9313'".
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, reason, f"{host}:{port}") from exc
    if port == 0 and len(listeners) > 1:
        # A name resolving to several addresses got a different free port on each: keep one.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    sockname = listeners[0].socket.getsockname()
    url_host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    try:
        server.reserve.refill()
        async with open_nursery() as nursery:
            await nursery.start(server.lifespan)
            for listener in listeners:
                nursery.start_soon(server.accept_loop, listener, nursery)
            task_status.started(f"http://{url_host}:{sockname[1]}")
    finally:
        server.reserve.close()
        for listener in listeners:
            await trio.aclose_forcefully(listener)


class _FdReserve:
    """Spare descriptors (``/dev/null`` opened), given up one at a time to accept a connection.

    Why: when probes have used every descriptor the process may have, ``accept`` fails with
    ``EMFILE`` and the scrapes that would show the problem cannot be answered.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._fds: list[int] = []  # filled by refill() once the server runs

    def release(self) -> bool:
        """Close one spare, so the next ``accept`` can have its descriptor; False if none."""
        if not self._fds:
            return False
        os.close(self._fds.pop())
        return True

    def refill(self) -> None:
        while len(self._fds) < self.count:
            try:
                self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return  # none to spare now: try again when a connection closes

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


@attrs.define(eq=False)
class _Slot:
    """One served connection, as the shedding policy sees it."""

    #: Set while the connection waits for the first byte of a request: cancelling it sheds it.
    idle: trio.CancelScope | None = None
    #: When that wait began (trio time).
    idle_since: float = 0.0
    #: Requests answered on it; a connection that never sent one is shed before a scraper's.
    requests: int = 0
    shed: bool = False


@attrs.define
class _Server:
    app: ASGIApp
    request_timeout: float
    max_connections: int
    stats: HTTPServerStats
    _slots: set[_Slot] = attrs.field(factory=set)
    _log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(log))
    reserve: _FdReserve = attrs.field(factory=lambda: _FdReserve(FD_RESERVE))

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """Accept connections until cancelled; running out of descriptors is survived."""
        backoff = _ACCEPT_BACKOFF[0]
        from_reserve = False
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                self.stats.accept_errors += 1
                self._log.warning(
                    "accept",
                    "HTTP server: cannot accept a connection: %s (RLIMIT_NOFILE: see "
                    "docs/probing.md, 'Hostile clients')",
                    os.strerror(exc.errno or 0),
                )
                # Nothing runs between this close and the accept: the descriptor is its.
                from_reserve = self.reserve.release()
                if not from_reserve:
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, _ACCEPT_BACKOFF[1])
                continue
            backoff = _ACCEPT_BACKOFF[0]
            if from_reserve:
                self.stats.accepted_from_reserve += 1
                from_reserve = False
            nursery.start_soon(self.connection, stream)

    def _shed_one(self) -> bool:
        """Close the connection idle the longest (never used ones first); False if none is."""
        idle = [slot for slot in self._slots if slot.idle is not None]
        if not idle:
            return False
        victim = min(idle, key=lambda slot: (slot.requests > 0, slot.idle_since))
        assert victim.idle is not None
        victim.idle.cancel()
        victim.shed = True
        self._slots.discard(victim)
        self.stats.shed += 1
        self._log.warning(
            "shed",
            "HTTP server: %d connections open, closed the one idle the longest",
            self.max_connections,
        )
        return True

    async def lifespan(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False

        async def receive() -> MutableMapping[str, Any]:
            if not started:
                return {"type": "lifespan.startup"}
            # Shutdown is a cancellation here, as everywhere in trioprobe.
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "lifespan.startup.complete" and not started:
                started = True
                task_status.started()
            elif message["type"] == "lifespan.startup.failed":
                raise RuntimeError(f"ASGI app failed to start: {message.get('message', '')}")

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        await self.app(scope, receive, send)
        if not started:
            # The app returned without answering: it has no lifespan support, which is allowed.
            task_status.started()

    async def connection(self, stream: trio.SocketStream) -> None:
        """Serve one connection; nothing it raises (but cancellation) reaches the listener."""
        if len(self._slots) >= self.max_connections and not self._shed_one():
            self.stats.rejected += 1
            self._log.warning(
                "rejected",
                "HTTP server: %d connections open, all busy, refusing one",
                len(self._slots),
            )
            await trio.aclose_forcefully(stream)
            self.reserve.refill()
            return
        slot = _Slot()
        self._slots.add(slot)
        self.stats.connections += 1
        try:
            await self._serve(stream, slot)
        except trio.TooSlowError:
            self.stats.timeouts += 1
            self._log.warning(
                "timeout",
                "HTTP server: a request took over %gs, connection closed",
                self.request_timeout,
            )
        except (ReadError, WriteError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to answer
        except Exception as exc:
            self.stats.errors += 1
            self._log.warning("error", "HTTP server: connection failed: %r", exc)
        finally:
            self._slots.discard(slot)
            await trio.aclose_forcefully(stream)
            self.reserve.refill()

    async def _serve(self, stream: trio.SocketStream, slot: _Slot) -> None:
        http = HTTP11Connection(stream, h11.SERVER, max_head_bytes=MAX_HEADER_BYTES)
        while True:
            if not http.buffered:
                # Idle: no byte of a next request yet. A keep-alive connection (a scraper's)
                # that stays idle is closed quietly; only a started request is held to time.
                # While idle it may be shed to admit a new client (see _shed_one).
                slot.idle_since = trio.current_time()
                slot.idle = trio.CancelScope(deadline=slot.idle_since + self.request_timeout)
                with slot.idle:
                    await http.receive_some()
                slot.idle = None
                if slot.shed:
                    return  # even if a byte came in the same instant: its slot is given away
                if not http.buffered and not http.peer_closed:
                    return
            with trio.fail_after(self.request_timeout):
                try:
                    request = await read_request(http)
                    if request is None:
                        return
                    body = await read_body(http)
                except (RemoteProtocolError, BadRequest) as exc:
                    await self._reject(http, exc)
                    return
                await call_app(self.app, http, request, body)
                self.stats.requests += 1
            if not http.both_done:
                return
            slot.requests += 1
            http.start_next_cycle()

    async def _reject(self, http: HTTP11Connection, exc: RemoteProtocolError | BadRequest) -> None:
        self.stats.bad_requests += 1
        self._log.warning("bad request", "HTTP server: bad request: %s", exc)
        await send_error(http, exc)
