"""Request/reply servers: :class:`RepServer` (one request at a time) and :class:`RouterServer`
(a ROUTER socket feeding N worker tasks), with the reference's access metrics.

Both are services: ``addr = await nursery.start(server.run)`` binds, reports the bound address
(``tcp://127.0.0.1:0`` picks a free port) and serves until cancelled; cancelling is the shutdown,
after which the merged metrics are logged and, when asked, appended to a JSON-lines file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket as _stdlib_socket
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Final

import attrs
import trio
import zmq

from .._groups import open_nursery
from .._ratelog import RateLimitedLog
from ._output import check_appendable_in_thread, write_in_thread
from .errors import MessageTooLargeError
from .sockets import DEFAULT_MAX_FRAMES, DEFAULT_MAX_MESSAGE_SIZE, Socket
from .wire import error_reply, split_envelope

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_HANDLER_TIMEOUT",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_WORKERS",
    "OTHER_CLIENTS",
    "Handler",
    "RepServer",
    "RouterServer",
    "ServerMetrics",
]

log = logging.getLogger("trioprobe.zmqnet")

#: The reference's port, on loopback only like the HTTP surfaces: serving every interface
#: (``tcp://*:4157``, the reference's default) must be asked for.
DEFAULT_ADDR: Final = "tcp://127.0.0.1:4157"
#: Seconds a handler may take over one request before it is cancelled and an error is answered.
DEFAULT_HANDLER_TIMEOUT: Final = 5.0
#: The reference's default worker count (0 also means this).
DEFAULT_WORKERS: Final = 16

#: Distinct client ids whose accesses are counted one by one; the rest share
#: :data:`OTHER_CLIENTS`. Lazy Pirate clients (and the probes) take a new identity on every
#: reconnect, so without a bound a long-running server would grow its counts forever.
DEFAULT_MAX_CLIENTS: Final = 10_000
#: The key under which accesses by clients beyond ``max_clients`` are counted together.
OTHER_CLIENTS: Final = "(other clients)"

#: An async function from request bytes to reply bytes. Raising answers an error frame.
Handler = Callable[[bytes], Awaitable[bytes]]

# Messages handled between checkpoints when the socket never runs dry: enough to amortise the
# scheduler pass, few enough that other tasks (and cancellation) are not starved.
_BATCH: Final = 128


@attrs.define
class ServerMetrics:
    """Access counts the way rtreq keeps them (its ``Metrics``), plus error counts.

    Times are ``trio.current_time()`` seconds; only differences are exported.

    At most ``max_clients`` distinct clients are counted one by one; accesses by any further
    client are counted under :data:`OTHER_CLIENTS`, so ``accesses`` stays exact while memory
    stays bounded, and ``n_clients`` is at most ``max_clients + 1``.
    """

    accesses_by_client: dict[str, int] = attrs.field(factory=dict)
    started: float | None = None
    finished: float | None = None
    received: int = 0
    sent: int = 0
    bytes_sent: int = 0
    errors: int = 0
    unroutable: int = 0
    #: Replies dropped because the client's queue was full (it sends without reading replies).
    dropped: int = 0
    #: Requests whose handler ran past the deadline (answered with an error).
    timeouts: int = 0
    #: Requests over the size or frame limit (answered with an error, handler not called).
    oversized: int = 0
    max_clients: int = DEFAULT_MAX_CLIENTS

    def increment(self, client: str, now: float) -> None:
        """Count a request received from ``client`` (the first one starts the clock)."""
        if self.started is None:
            self.started = now
        self.received += 1
        self._count(client, 1)

    def _count(self, client: str, accesses: int) -> None:
        by_client = self.accesses_by_client
        if client not in by_client and len(by_client) >= self.max_clients:
            client = OTHER_CLIENTS
        by_client[client] = by_client.get(client, 0) + accesses

    def complete(self, now: float, nbytes: int) -> None:
        """Count a reply sent (the last one stops the clock)."""
        self.sent += 1
        self.bytes_sent += nbytes
        self.finished = now

    @property
    def accesses(self) -> int:
        return sum(self.accesses_by_client.values())

    @property
    def n_clients(self) -> int:
        return len(self.accesses_by_client)

    @property
    def client_mean(self) -> float:
        """Mean accesses per distinct client (0 without clients)."""
        return self.accesses / self.n_clients if self.accesses_by_client else 0.0

    @property
    def duration(self) -> float:
        """Seconds from the first request received to the last reply sent."""
        if self.started is None or self.finished is None:
            return 0.0
        return max(0.0, self.finished - self.started)

    @property
    def throughput(self) -> float:
        """Accesses per second over :attr:`duration` (0 when either is 0, as in the reference)."""
        duration = self.duration
        accesses = self.accesses
        return accesses / duration if accesses and duration > 0 else 0.0

    def merge(self, other: ServerMetrics) -> None:
        """Add ``other`` in: counts sum, earliest start and latest finish win (rtreq's Append)."""
        for client, count in other.accesses_by_client.items():
            self._count(client, count)
        if other.started is not None and (self.started is None or other.started < self.started):
            self.started = other.started
        if other.finished is not None and (self.finished is None or other.finished > self.finished):
            self.finished = other.finished
        self.received += other.received
        self.sent += other.sent
        self.bytes_sent += other.bytes_sent
        self.errors += other.errors
        self.unroutable += other.unroutable
        self.dropped += other.dropped
        self.timeouts += other.timeouts
        self.oversized += other.oversized

    def serialize(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The reference's keys (``duration`` in seconds, not a Go duration string), then extra."""
        data: dict[str, Any] = {
            "clients": self.n_clients,
            "accesses": self.accesses,
            "mean": self.client_mean,
            "duration": self.duration,
            "throughput": self.throughput,
            "errors": self.errors,
            "unroutable": self.unroutable,
            "dropped": self.dropped,
            "timeouts": self.timeouts,
            "oversized": self.oversized,
        }
        if extra:
            data.update(extra)
        return data

    def write(self, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> None:
        """Append one compact JSON line (called once, at shutdown)."""
        line = json.dumps(self.serialize(extra), separators=(",", ":"))
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")

    def summary(self) -> str:
        return (
            f"{self.accesses} accesses by {self.n_clients} clients in {self.duration:.3f}s "
            f"-- {self.throughput:0.4f} accesses/second"
        )


def _client_name(routing_id: bytes) -> str:
    """A printable key for a peer: its identity if it set a text one, else the id in hex."""
    try:
        text = routing_id.decode("utf-8")
    except UnicodeDecodeError:
        return routing_id.hex()
    return text if text and text.isprintable() else routing_id.hex()


class _Slot:
    """The request one handler task is working on, as the watchdog sees it."""

    __slots__ = ("envelope", "scope", "started")

    def __init__(self) -> None:
        #: The task's cancel scope around its handler calls (None before it starts).
        self.scope: trio.CancelScope | None = None
        #: ``trio.current_time()`` when its handler was called; None while none runs.
        self.started: float | None = None
        #: Where the reply to that request goes (kept when the watchdog cancels it).
        self.envelope: list[bytes] | None = None


class _Watchdog:
    """Cancels handlers that run past ``timeout``, for every handler task with one timer.

    A ``move_on_after`` around each handler call cost ~18 us of CPU per request under load (a
    cancel scope entered and left, a deadline added and removed): more than the rest of a
    ROUTER message's Python work together. Instead each task keeps one cancel scope across
    requests and notes when its handler started; this task sleeps until the earliest due time
    and cancels the scope of a handler that is still running then. Between requests a task
    never waits while ``started`` is set, so a cancel always hits the handler it was aimed at.
    """

    def __init__(self, timeout: float, slots: list[_Slot]) -> None:
        self.timeout = timeout
        self.slots = slots

    async def run(self) -> None:
        timeout = self.timeout
        while True:
            now = trio.current_time()
            wake = now + timeout
            for slot in self.slots:
                started = slot.started
                if started is None:
                    continue
                due = started + timeout
                if due <= now:
                    slot.started = None
                    assert slot.scope is not None
                    slot.scope.cancel()
                elif due < wake:
                    wake = due
            await trio.sleep_until(wake)


class _Server:
    """What both servers share: the socket setup, the per-request step and the shutdown."""

    kind = "server"

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        handler: Handler | None = None,
        *,
        name: str | None = None,
        metrics_path: str | os.PathLike[str] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frames: int = DEFAULT_MAX_FRAMES,
        hwm: int | None = None,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
    ) -> None:
        if max_clients < 0:
            raise ValueError(f"max_clients must be >= 0, got {max_clients}")
        if handler_timeout is not None and not handler_timeout > 0:
            raise ValueError(f"handler_timeout must be > 0 seconds or None, got {handler_timeout}")
        if max_frames == 0 or max_frames < -1:
            raise ValueError(f"max_frames must be >= 1 (or -1: no limit), got {max_frames}")
        self.addr = addr
        self.handler = handler
        self.name = name if name is not None else _stdlib_socket.gethostname()
        self.metrics_path = metrics_path
        self.max_message_size = max_message_size
        self.max_frames = max_frames
        self.handler_timeout = handler_timeout
        self.hwm = hwm
        self.max_clients = max_clients
        self.address: str | None = None
        self._worker_metrics: list[ServerMetrics] = []
        # Routing id -> metrics key, so each message does not decode its sender again. Bounded
        # like the metrics: past max_clients ids, new senders are decoded on every message.
        self._names: dict[bytes, str] = {}
        self._log = RateLimitedLog(log)

    @property
    def metrics(self) -> ServerMetrics:
        """The workers' metrics merged (a fresh copy each call)."""
        merged = self._new_metrics()
        for metrics in self._worker_metrics:
            merged.merge(metrics)
        return merged

    def _new_metrics(self) -> ServerMetrics:
        return ServerMetrics(max_clients=self.max_clients)

    def _client(self, routing_id: bytes) -> str:
        names = self._names
        client = names.get(routing_id)
        if client is None:
            client = _client_name(routing_id)
            if len(names) < self.max_clients:
                names[routing_id] = client
        return client

    async def _open(self) -> tuple[Socket, str]:
        if self.metrics_path is not None:
            # Fail now, not at shutdown when the metrics of the whole run would be lost.
            await check_appendable_in_thread(self.metrics_path)
        sock = Socket(zmq.ROUTER, max_message_size=self.max_message_size, hwm=self.hwm)
        try:
            address = sock.bind(self.addr)
        except BaseException:
            sock.close()
            raise
        self.address = address
        return sock, address

    async def _shutdown(self) -> None:
        metrics = self.metrics
        log.info("%s server %s: %s", self.kind, self.address, metrics.summary())
        path = self.metrics_path
        if path is not None:
            await write_in_thread(
                partial(metrics.write, path, {"server": self.kind}), f"metrics file {path}"
            )

    def _slots(self, nursery: trio.Nursery, n: int) -> list[_Slot]:
        """One slot per handler task, and the watchdog over them when handlers have a timeout."""
        slots = [_Slot() for _ in range(n)]
        if self.handler is not None and self.handler_timeout is not None:
            nursery.start_soon(_Watchdog(self.handler_timeout, slots).run)
        return slots

    async def _serve_one(
        self,
        sock: Socket,
        frames: list[bytes],
        metrics: ServerMetrics,
        worker: str | None,
        slot: _Slot,
    ) -> None:
        """Answer one request; a handler error becomes an error reply, never a dead server.

        Runs inside the task's cancel scope (``slot.scope``): if the watchdog cancels the
        handler, ``Cancelled`` leaves here with ``slot.envelope`` set, and the task answers
        with :meth:`_answer_timeout` once out of the scope.
        """
        envelope, body = split_envelope(frames)
        now = trio.current_time()
        metrics.increment(self._client(frames[0]), now)
        reply: list[bytes]
        handler = self.handler
        if len(body) > 1:
            metrics.errors += 1
            reply = error_reply(f"expected a one-frame request, got {len(body)} frames")
        elif handler is None:
            # The reference's reply text; its counter is per worker and 1-based.
            n = metrics.received
            text = f"reply msg #{n}" if worker is None else f"reply msg #{n} from {worker}"
            reply = [text.encode()]
        else:
            slot.started, slot.envelope = now, envelope
            try:
                reply = [await handler(body[0] if body else b"")]
                now = trio.current_time()
            except Exception as exc:
                metrics.errors += 1
                self._log.warning(
                    "handler", "%s server %s: handler failed: %r", self.kind, self.address, exc
                )
                reply = error_reply(f"{type(exc).__name__}: {exc}")
            slot.started = slot.envelope = None
        if self._reply(sock, envelope, reply, metrics):
            metrics.complete(now, len(reply[0]) if len(reply) == 1 else sum(map(len, reply)))

    def _answer_timeout(self, sock: Socket, slot: _Slot, metrics: ServerMetrics) -> None:
        """After the task's scope was cancelled: answer the request the watchdog gave up on."""
        envelope, slot.envelope, slot.started = slot.envelope, None, None
        if envelope is None:
            return  # the handler caught the cancel and answered itself
        metrics.timeouts += 1
        self._log.warning(
            "timeout",
            "%s server %s: handler took over %gs, cancelled",
            self.kind,
            self.address,
            self.handler_timeout,
        )
        reply = error_reply(f"handler timed out after {self.handler_timeout:g}s")
        if self._reply(sock, envelope, reply, metrics):
            metrics.complete(trio.current_time(), sum(map(len, reply)))

    def _reply(
        self, sock: Socket, envelope: list[bytes], body: list[bytes], metrics: ServerMetrics
    ) -> bool:
        """Send now or drop (counted); never wait. True if sent.

        Waiting for a client whose queue is full would let a client that sends and never reads
        stall everyone else (a ROUTER cannot wait for one peer: it reports writable when any
        peer has room). A well-behaved client never has ``hwm`` replies unread.
        """
        try:
            sent = sock.try_send_multipart([*envelope, *body])
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            # The client went away (Lazy Pirate clients reconnect under a new identity).
            metrics.unroutable += 1
            return False
        if not sent:
            metrics.dropped += 1
            self._log.warning(
                "dropped",
                "%s server %s: reply dropped, client %s does not read its replies",
                self.kind,
                self.address,
                self._client(envelope[0]),
            )
        return sent

    def _receive(self, sock: Socket, metrics: ServerMetrics) -> list[bytes] | None:
        """The next request (None if there is none); ``[]`` for one refused as too large."""
        try:
            return sock.try_recv_multipart(self.max_frames, self.max_message_size)
        except MessageTooLargeError as exc:
            metrics.oversized += 1
            self._log.warning("oversized", "%s server %s: %s", self.kind, self.address, exc)
            head = exc.head
            if len(head) > 1 or exc.frames == 1:
                envelope, _ = split_envelope(head)
                self._reply(sock, envelope, error_reply(str(exc)), metrics)
            return []


class RepServer(_Server):
    """Answers requests one at a time, in arrival order: the reference's "sync" REP server.

    On the wire it behaves as a REP socket, but it is built on a ROUTER: a REP socket whose
    handler is cancelled between receive and reply is stuck for good (trio-notes §1.5), and a
    ROUTER also tells us who the client is, which the access metrics need.
    """

    kind = "rep"

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the bound address, serve until cancelled, then write the metrics."""
        sock, address = await self._open()
        metrics = self._new_metrics()
        self._worker_metrics = [metrics]
        try:
            async with open_nursery() as nursery:
                (slot,) = self._slots(nursery, 1)
                task_status.started(address)
                while True:
                    with trio.CancelScope() as slot.scope:
                        await self._serve(sock, metrics, slot, slot.scope)
                    self._answer_timeout(sock, slot, metrics)
        finally:
            sock.close()
            await self._shutdown()

    async def _serve(
        self, sock: Socket, metrics: ServerMetrics, slot: _Slot, scope: trio.CancelScope
    ) -> None:
        served = 0
        # A cancelled scope is left for a fresh one (a handler that swallowed the cancel).
        while not scope.cancel_called:
            # Ask EVENTS before receiving: with one request at a time the socket is usually
            # empty after a reply, and a receive failing with EAGAIN costs twice what an
            # EVENTS read does. After a wake-up on the fd a request is almost always there:
            # receive at once instead of reading EVENTS again (confirm=False).
            if await sock.wait_readable(confirm=False):
                served = 0
            frames = self._receive(sock, metrics)
            if frames is None:
                continue
            if frames:
                await self._serve_one(sock, frames, metrics, None, slot)
            served += 1
            if served >= _BATCH:
                # Never run dry: let other tasks (and cancellation) in now and then.
                served = 0
                await trio.lowlevel.checkpoint()


class RouterServer(_Server):
    """A ROUTER socket whose task feeds ``workers`` handler tasks (the reference's ROUTER/DEALER
    proxy with N REP workers, without the proxy: Trio tasks share the socket directly).

    The receiving task drains every ready message into a bounded memory channel before it waits
    again, and workers reply straight on the ROUTER socket. With a handler that never blocks one
    worker may answer a whole batch; a handler that awaits something lets the other workers take
    the following requests, so up to ``workers`` requests are handled concurrently.
    """

    kind = "router"

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        handler: Handler | None = None,
        *,
        workers: int = DEFAULT_WORKERS,
        name: str | None = None,
        metrics_path: str | os.PathLike[str] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frames: int = DEFAULT_MAX_FRAMES,
        hwm: int | None = None,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        queue_size: int = 1024,
    ) -> None:
        super().__init__(
            addr,
            handler,
            name=name,
            metrics_path=metrics_path,
            max_message_size=max_message_size,
            max_frames=max_frames,
            hwm=hwm,
            max_clients=max_clients,
            handler_timeout=handler_timeout,
        )
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 means {DEFAULT_WORKERS}), got {workers}")
        self.workers = workers or DEFAULT_WORKERS
        self.queue_size = queue_size

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, start the workers, report the bound address, serve until cancelled."""
        sock, address = await self._open()
        # One per worker, and the last one for what the receiving task refuses.
        self._worker_metrics = [self._new_metrics() for _ in range(self.workers + 1)]
        send_channel, receive_channel = trio.open_memory_channel[list[bytes]](self.queue_size)
        try:
            async with open_nursery() as nursery:
                slots = self._slots(nursery, self.workers)
                for i in range(self.workers):
                    nursery.start_soon(
                        self._worker,
                        sock,
                        receive_channel,
                        self._worker_metrics[i],
                        f"worker {self.name}-{i + 1}",
                        slots[i],
                    )
                task_status.started(address)
                await self._receive_loop(sock, send_channel, self._worker_metrics[-1])
        finally:
            sock.close()
            await self._shutdown()

    async def _receive_loop(
        self,
        sock: Socket,
        requests: trio.MemorySendChannel[list[bytes]],
        metrics: ServerMetrics,
    ) -> None:
        # Whether the last look at the socket found requests (see below).
        busy = False
        while True:
            received = 0
            while received < _BATCH:
                frames = self._receive(sock, metrics)
                if frames is None:
                    break
                received += 1
                if not frames:
                    continue
                try:
                    requests.send_nowait(frames)
                except trio.WouldBlock:
                    # Workers are behind: stop reading, so the HWM pushes back on clients.
                    await requests.send(frames)
            if received or busy:
                # Let the workers answer this batch (their replies may free the peers to send
                # more) before we look at the socket again. Found empty right after a batch,
                # it gets one more pass before we wait on the fd: a reply sent while we wait
                # costs the sender an EVENTS read and often a kick (see sockets.py), and once
                # the workers are done nobody sends but us.
                busy = bool(received)
                await trio.lowlevel.checkpoint()
            else:
                await sock.wait_readable()

    async def _worker(
        self,
        sock: Socket,
        requests: trio.MemoryReceiveChannel[list[bytes]],
        metrics: ServerMetrics,
        label: str,
        slot: _Slot,
    ) -> None:
        while True:
            with trio.CancelScope() as slot.scope:
                await self._work(sock, requests, metrics, label, slot, slot.scope)
            self._answer_timeout(sock, slot, metrics)

    async def _work(
        self,
        sock: Socket,
        requests: trio.MemoryReceiveChannel[list[bytes]],
        metrics: ServerMetrics,
        label: str,
        slot: _Slot,
        scope: trio.CancelScope,
    ) -> None:
        # A cancelled scope is left for a fresh one (a handler that swallowed the cancel).
        while not scope.cancel_called:
            frames = await requests.receive()
            await self._serve_one(sock, frames, metrics, label, slot)
            # Take what is already queued without a checkpoint per message.
            for _ in range(_BATCH):
                if scope.cancel_called:
                    return
                try:
                    frames = requests.receive_nowait()
                except trio.WouldBlock:
                    break
                await self._serve_one(sock, frames, metrics, label, slot)
