"""The servers of :mod:`trioprobe.testing`: a fake probe target you can break on purpose, and
small servers (a health endpoint, a ZeroMQ echo, a memory log) bound to your nursery."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

import attrs
import h11
import httpx
import trio

from .._groups import open_nursery
from .._http11 import HTTP11Connection, HTTP11Error

if TYPE_CHECKING:
    from ..logping import MemoryLog

logger = logging.getLogger("trioprobe.testing")

__all__ = [
    "FakeTarget",
    "Reply",
    "start_fake_target",
    "start_health_endpoint",
    "start_zmq_echo",
    "start_memory_log",
]


# --- the fake probe target --------------------------------------------------------------------


@attrs.frozen
class Reply:
    """What the fake target does with one request: wait ``delay`` seconds (``trio.sleep``, so a
    mock clock drives it), then answer ``status``, or reset the connection when ``reset``."""

    status: int = 200
    delay: float = 0.0
    reset: bool = False

    @property
    def ok(self) -> bool:
        return not self.reset and 200 <= self.status < 300


_OK_BODY = b"ok\n"
# A request (line and headers) bigger than this is a protocol error; bodies are read and dropped.
_MAX_REQUEST_HEAD = 16 * 1024
# A connection that sends no complete request for this long is closed.
_IDLE_TIMEOUT = 30.0
# SO_LINGER on, timeout 0: close() then sends RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


class FakeTarget:
    """An HTTP endpoint that is healthy until told otherwise, and counts what it served.

    Tell it at run time what to do with the next requests:

    - :meth:`fail` answer ``status`` (503 by default), or reset the connection (``reset=True``);
    - :meth:`slow` wait ``delay`` seconds before each reply (on the Trio clock);
    - :meth:`flap` alternate: ``every`` failing replies, then ``every`` healthy ones, and so on;
    - :meth:`succeed` healthy again (200 ``ok``) with no delay.

    It answers any method and path. Reach it either over loopback (``await
    nursery.start(target.serve)`` returns ``http://127.0.0.1:PORT``, also kept in :attr:`url`;
    resets are real TCP resets) or in memory with :meth:`client`/:meth:`transport`, whose requests
    never touch a socket, which is what tests under ``autojump_clock`` need. Both share the
    behaviour and the counters.

    Counters: :attr:`requests` received, :attr:`ok` and :attr:`errors` (non-2xx) replies sent,
    :attr:`resets` done, :attr:`connections` accepted and :attr:`bad_connections` dropped for a
    protocol or socket error. A request whose client gives up during the delay counts only in
    :attr:`requests`.
    """

    def __init__(self) -> None:
        self._failure = Reply(status=503)
        self._failing = False
        self._flap_every = 0
        self._flap_count = 0
        self._delay = 0.0
        self.url: str | None = None
        self.requests = 0
        self.ok = 0
        self.errors = 0
        self.resets = 0
        self.connections = 0
        self.bad_connections = 0
        self._received = trio.Event()

    # behaviour

    def fail(self, status: int = 503, *, reset: bool = False) -> None:
        """Fail every following request: answer ``status``, or reset the connection."""
        self._set_failure(status, reset)
        self._failing = True
        self._flap_every = 0

    def flap(self, every: int = 1, *, status: int = 503, reset: bool = False) -> None:
        """Alternate from the next request on: ``every`` failures, then ``every`` successes."""
        if every < 1:
            raise ValueError(f"flap: every must be >= 1, got {every}")
        self._set_failure(status, reset)
        self._failing = False
        self._flap_every = every
        self._flap_count = 0

    def slow(self, delay: float) -> None:
        """Wait ``delay`` seconds (Trio's clock) before every following reply; 0 removes it."""
        if not delay >= 0:  # also rejects NaN
            raise ValueError(f"slow: delay must be >= 0 seconds, got {delay!r}")
        self._delay = delay

    def succeed(self) -> None:
        """Healthy again: 200 ``ok`` to every following request, with no delay."""
        self._failing = False
        self._flap_every = 0
        self._delay = 0.0

    def _set_failure(self, status: int, reset: bool) -> None:
        if not reset and not 200 <= status <= 599:
            # 1xx are interim responses, not answers a probe could be given.
            raise ValueError(f"fail: status must be a final HTTP status (200-599), got {status}")
        self._failure = Reply(status=status, reset=reset)

    def next_reply(self) -> Reply:
        """Count one request and decide its reply (both front ends call this)."""
        self.requests += 1
        self._received.set()
        self._received = trio.Event()
        failing = self._failing
        if self._flap_every:
            failing = (self._flap_count // self._flap_every) % 2 == 0
            self._flap_count += 1
        reply = self._failure if failing else Reply()
        return attrs.evolve(reply, delay=self._delay)

    def _count(self, reply: Reply) -> None:
        if reply.reset:
            self.resets += 1
        elif reply.ok:
            self.ok += 1
        else:
            self.errors += 1

    async def wait_for_requests(self, count: int) -> None:
        """Return once :attr:`requests` is at least ``count`` (no polling)."""
        while self.requests < count:
            await self._received.wait()

    # in memory

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport that hands each request to this target, without a socket."""
        return _FakeTransport(self)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A new ``httpx.AsyncClient`` on :meth:`transport` (the caller closes it).

        Any URL reaches the target. Pass it wherever a probe takes a client, e.g. ``HTTPProbe(...,
        client_factory=target.client)`` or ``open_prober(target.client())``.
        """
        return httpx.AsyncClient(transport=self.transport(), **kwargs)

    # over loopback

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve HTTP/1.1 on ``host:port`` until cancelled; reports ``http://host:port``."""
        async with open_nursery() as nursery:
            listeners: list[trio.SocketListener] = await nursery.start(
                partial(trio.serve_tcp, self._serve_connection, port, host=host)
            )
            bound_port = listeners[0].socket.getsockname()[1]
            self.url = (
                f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
            )
            task_status.started(self.url)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        http = HTTP11Connection(stream, h11.SERVER, max_head_bytes=_MAX_REQUEST_HEAD)
        try:
            while True:
                method = None
                with trio.move_on_after(_IDLE_TIMEOUT):
                    method = await _read_request(http)
                if method is None:
                    return
                reply = self.next_reply()
                await trio.sleep(reply.delay)
                if reply.reset:
                    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                    self._count(reply)
                    return
                await _send_reply(http, reply, head=method == b"HEAD")
                self._count(reply)
                if not http.both_done:
                    return
                http.start_next_cycle()
        except (HTTP11Error, OSError) as exc:
            # A hostile or broken client costs its own connection only.
            self.bad_connections += 1
            logger.debug("fake target %s: dropped a connection: %r", self.url, exc)
        finally:
            await trio.aclose_forcefully(stream)


class _FakeTransport(httpx.AsyncBaseTransport):
    def __init__(self, target: FakeTarget) -> None:
        self._target = target

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        reply = self._target.next_reply()
        await trio.sleep(reply.delay)
        self._target._count(reply)
        if reply.reset:
            # What httpx raises when a real peer resets the connection.
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        body = _reply_body(reply)
        return httpx.Response(reply.status, headers=_reply_headers(reply, body), content=body)


# Statuses whose responses have no body at all (RFC 9110), so no Content-Length either.
_NO_BODY = frozenset({204, 304})


def _reply_body(reply: Reply) -> bytes:
    if reply.status in _NO_BODY:
        return b""
    return _OK_BODY if reply.ok else f"fake target failing with {reply.status}\n".encode()


def _reply_headers(reply: Reply, body: bytes) -> list[tuple[str, str]]:
    headers = [("content-type", "text/plain; charset=utf-8")]
    if reply.status not in _NO_BODY:
        headers.append(("content-length", str(len(body))))
    return headers


async def _read_request(http: HTTP11Connection) -> bytes | None:
    """Read one request to its end (the body is dropped); its method, or None at EOF."""
    method: bytes | None = None
    while True:
        event = await http.next_event()
        if isinstance(event, h11.Request):
            method = event.method
        elif isinstance(event, h11.EndOfMessage):
            return method
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send_reply(http: HTTP11Connection, reply: Reply, *, head: bool) -> None:
    body = _reply_body(reply)
    # The standard reason phrase, as httpx gives in memory, so both ways in read the same.
    try:
        reason = HTTPStatus(reply.status).phrase.encode()
    except ValueError:
        reason = b""
    response = h11.Response(
        status_code=reply.status, headers=_reply_headers(reply, body), reason=reason
    )
    if head:
        await http.send(response, h11.EndOfMessage())
    else:
        await http.send(response, h11.Data(data=body), h11.EndOfMessage())


async def start_fake_target(
    nursery: trio.Nursery, target: FakeTarget | None = None, *, host: str = "127.0.0.1"
) -> FakeTarget:
    """Serve ``target`` (a new one by default) in ``nursery`` on loopback; :attr:`~FakeTarget.url`
    holds its URL."""
    target = target if target is not None else FakeTarget()
    await nursery.start(partial(target.serve, host))
    return target


# --- the capabilities' servers ----------------------------------------------------------------


async def start_health_endpoint(
    nursery: trio.Nursery,
    *,
    path: str | None = None,
    wall_clock_ns: Callable[[], int] | None = None,
    host: str = "127.0.0.1",
) -> str:
    """Serve the etcd-style health endpoint in ``nursery`` and return its full URL.

    ``path`` defaults to etcd's ``/raft/probing``; ``wall_clock_ns`` pins the reported ``Now``.
    """
    from ..probing.health import DEFAULT_PATH, HealthApp, serve_health

    path = DEFAULT_PATH if path is None else path
    app = None if wall_clock_ns is None else HealthApp(path=path, wall_clock_ns=wall_clock_ns)
    url: str = await nursery.start(partial(serve_health, host, 0, path=path, app=app))
    return url


async def _echo(request: bytes) -> bytes:
    return request


async def start_zmq_echo(
    nursery: trio.Nursery,
    *,
    kind: Literal["router", "rep"] = "router",
    workers: int = 2,
    host: str = "127.0.0.1",
) -> str:
    """Serve a ZeroMQ server that answers each request with its own bytes; return its address.

    ``kind="router"`` is :class:`~trioprobe.zmqnet.RouterServer` with ``workers`` tasks,
    ``"rep"`` the one-at-a-time :class:`~trioprobe.zmqnet.RepServer`. libzmq moves bytes in its
    own thread, so use it in real time (``fail_after``), not under ``autojump_clock``.
    """
    from ..zmqnet import RepServer, RouterServer

    addr = f"tcp://{host}:0"
    if kind == "router":
        server: RouterServer | RepServer = RouterServer(addr, _echo, workers=workers, name="echo")
    elif kind == "rep":
        server = RepServer(addr, _echo, name="echo")
    else:
        raise ValueError(f"start_zmq_echo: kind must be 'router' or 'rep', got {kind!r}")
    address: str = await nursery.start(server.run)
    return address


async def _hold_memory_log(name: str, *, task_status: trio.TaskStatus[MemoryLog]) -> None:
    from ..logping import MemoryLog

    log = MemoryLog(name)
    try:
        task_status.started(log)
        await trio.sleep_forever()
    finally:
        # Readers still following it end with LogClosedError instead of waiting forever.
        log.close()


async def start_memory_log(nursery: trio.Nursery, name: str = "memory") -> MemoryLog:
    """A fresh :class:`~trioprobe.logping.MemoryLog`, closed when ``nursery`` is cancelled."""
    log: MemoryLog = await nursery.start(_hold_memory_log, name)
    return log
