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
from typing import Any, Final

import attrs
import trio
import zmq

from ._output import check_appendable
from .socket import DEFAULT_MAX_MESSAGE_SIZE, Socket
from .wire import error_reply, split_envelope

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_WORKERS",
    "OTHER_CLIENTS",
    "Handler",
    "RepServer",
    "RouterServer",
    "ServerMetrics",
]

log = logging.getLogger("trioprobe.zmqnet")

#: The reference's default: every interface, port 4157.
DEFAULT_ADDR: Final = "tcp://*:4157"
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
        hwm: int | None = None,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        if max_clients < 0:
            raise ValueError(f"max_clients must be >= 0, got {max_clients}")
        self.addr = addr
        self.handler = handler
        self.name = name if name is not None else _stdlib_socket.gethostname()
        self.metrics_path = metrics_path
        self.max_message_size = max_message_size
        self.hwm = hwm
        self.max_clients = max_clients
        self.address: str | None = None
        self._worker_metrics: list[ServerMetrics] = []
        # Routing id -> metrics key, so each message does not decode its sender again. Bounded
        # like the metrics: past max_clients ids, new senders are decoded on every message.
        self._names: dict[bytes, str] = {}

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

    def _open(self) -> tuple[Socket, str]:
        if self.metrics_path is not None:
            # Fail now, not at shutdown when the metrics of the whole run would be lost.
            check_appendable(self.metrics_path)
        sock = Socket(zmq.ROUTER, max_message_size=self.max_message_size, hwm=self.hwm)
        try:
            address = sock.bind(self.addr)
        except BaseException:
            sock.close()
            raise
        self.address = address
        return sock, address

    def _shutdown(self) -> None:
        metrics = self.metrics
        log.info("%s server %s: %s", self.kind, self.address, metrics.summary())
        if self.metrics_path is not None:
            metrics.write(self.metrics_path, {"server": self.kind})

    async def _serve_one(
        self, sock: Socket, frames: list[bytes], metrics: ServerMetrics, worker: str | None
    ) -> None:
        """Answer one request; a handler error becomes an error reply, never a dead server."""
        envelope, body = split_envelope(frames)
        metrics.increment(self._client(frames[0]), trio.current_time())
        reply: list[bytes]
        if len(body) > 1:
            metrics.errors += 1
            reply = error_reply(f"expected a one-frame request, got {len(body)} frames")
        else:
            request = body[0] if body else b""
            try:
                if self.handler is None:
                    # The reference's reply text; its counter is per worker and 1-based.
                    n = metrics.received
                    text = f"reply msg #{n}" if worker is None else f"reply msg #{n} from {worker}"
                    answer = text.encode()
                else:
                    answer = await self.handler(request)
                reply = [answer]
            except Exception as exc:
                metrics.errors += 1
                log.warning("%s server %s: handler failed: %r", self.kind, self.address, exc)
                reply = error_reply(f"{type(exc).__name__}: {exc}")
        envelope.extend(reply)
        try:
            if not sock.try_send_multipart(envelope):
                await sock.send_multipart(envelope)
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            # The client went away (Lazy Pirate clients reconnect under a new identity).
            metrics.unroutable += 1
            return
        metrics.complete(trio.current_time(), sum(len(frame) for frame in reply))


class RepServer(_Server):
    """Answers requests one at a time, in arrival order: the reference's "sync" REP server.

    On the wire it behaves as a REP socket, but it is built on a ROUTER: a REP socket whose
    handler is cancelled between receive and reply is stuck for good (trio-notes §1.5), and a
    ROUTER also tells us who the client is, which the access metrics need.
    """

    kind = "rep"

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the bound address, serve until cancelled, then write the metrics."""
        sock, address = self._open()
        metrics = self._new_metrics()
        self._worker_metrics = [metrics]
        try:
            task_status.started(address)
            served = 0
            while True:
                # Ask EVENTS before receiving: with one request at a time the socket is
                # usually empty after a reply, and a receive failing with EAGAIN costs twice
                # what an EVENTS read does.
                if await sock.wait_readable():
                    served = 0
                frames = sock.try_recv_multipart()
                if frames is None:
                    continue
                await self._serve_one(sock, frames, metrics, None)
                served += 1
                if served >= _BATCH:
                    # Never run dry: let other tasks (and cancellation) in now and then.
                    served = 0
                    await trio.lowlevel.checkpoint()
        finally:
            sock.close()
            self._shutdown()


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
        hwm: int | None = None,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        queue_size: int = 1024,
    ) -> None:
        super().__init__(
            addr,
            handler,
            name=name,
            metrics_path=metrics_path,
            max_message_size=max_message_size,
            hwm=hwm,
            max_clients=max_clients,
        )
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 means {DEFAULT_WORKERS}), got {workers}")
        self.workers = workers or DEFAULT_WORKERS
        self.queue_size = queue_size

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, start the workers, report the bound address, serve until cancelled."""
        sock, address = self._open()
        self._worker_metrics = [self._new_metrics() for _ in range(self.workers)]
        send_channel, receive_channel = trio.open_memory_channel[list[bytes]](self.queue_size)
        try:
            async with trio.open_nursery() as nursery:
                for i in range(self.workers):
                    nursery.start_soon(
                        self._worker,
                        sock,
                        receive_channel,
                        self._worker_metrics[i],
                        f"worker {self.name}-{i + 1}",
                    )
                task_status.started(address)
                await self._receive_loop(sock, send_channel)
        finally:
            sock.close()
            self._shutdown()

    async def _receive_loop(
        self, sock: Socket, requests: trio.MemorySendChannel[list[bytes]]
    ) -> None:
        while True:
            received = 0
            while received < _BATCH:
                frames = sock.try_recv_multipart()
                if frames is None:
                    break
                received += 1
                try:
                    requests.send_nowait(frames)
                except trio.WouldBlock:
                    # Workers are behind: stop reading, so the HWM pushes back on clients.
                    await requests.send(frames)
            if received:
                # Let the workers answer this batch (their replies may free the peers to send
                # more) before we look at the socket again.
                await trio.lowlevel.checkpoint()
            else:
                await sock.wait_readable()

    async def _worker(
        self,
        sock: Socket,
        requests: trio.MemoryReceiveChannel[list[bytes]],
        metrics: ServerMetrics,
        label: str,
    ) -> None:
        while True:
            frames = await requests.receive()
            await self._serve_one(sock, frames, metrics, label)
            # Take what is already queued without a checkpoint per message.
            for _ in range(_BATCH):
                try:
                    frames = requests.receive_nowait()
                except trio.WouldBlock:
                    break
                await self._serve_one(sock, frames, metrics, label)
