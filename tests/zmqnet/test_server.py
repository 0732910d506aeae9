"""RepServer and RouterServer, and interop with plain blocking pyzmq peers (real time, loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
import zmq

from trioprobe.zmqnet import (
    Client,
    RemoteError,
    ReplyTooLargeError,
    RepServer,
    RouterServer,
    ServerMetrics,
    Socket,
    shared_context,
)
from trioprobe.zmqnet.server import DEFAULT_ADDR, OTHER_CLIENTS

from ..responsiveness import ResponseTimes

LOCAL = "tcp://127.0.0.1:0"


async def echo(request: bytes) -> bytes:
    return request


async def hang_or_echo(request: bytes) -> bytes:
    if request == b"hang":
        await trio.sleep_forever()
    return request


async def failing(request: bytes) -> bytes:
    if request == b"boom":
        raise RuntimeError("handler exploded")
    return b"ok:" + request


def blocking_req(addr: str, messages: list[bytes]) -> list[list[bytes]]:
    """A plain pyzmq REQ client, as someone else's program would write it (runs in a thread)."""
    sock: zmq.Socket[bytes] = shared_context().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        sock.connect(addr)
        replies = []
        for message in messages:
            sock.send(message)
            replies.append(sock.recv_multipart())
        return replies
    finally:
        sock.close()


@pytest.mark.parametrize("server_type", [RepServer, RouterServer])
async def test_plain_pyzmq_req_client_against_our_servers(
    server_type: Callable[..., RepServer | RouterServer],
) -> None:
    server = server_type(LOCAL, echo)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            replies = await trio.to_thread.run_sync(blocking_req, addr, [b"one", b"two", b"three"])
            nursery.cancel_scope.cancel()
    assert replies == [[b"one"], [b"two"], [b"three"]]
    assert server.metrics.accesses == 3
    assert server.metrics.n_clients == 1


async def test_rep_server_default_reply_is_the_reference_text() -> None:
    server = RepServer(LOCAL)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            async with Client(addr, timeout=2) as client:
                assert await client.send("a") == b"reply msg #1"
                assert await client.send("b") == b"reply msg #2"
            nursery.cancel_scope.cancel()


async def test_router_server_default_reply_names_the_worker() -> None:
    server = RouterServer(LOCAL, workers=2, name="srv")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            async with Client(addr, timeout=2) as client:
                reply = await client.send("hello")
            nursery.cancel_scope.cancel()
    assert reply.startswith(b"reply msg #1 from worker srv-")
    assert reply.rsplit(b"-", 1)[1] in (b"1", b"2")


@pytest.mark.parametrize("server_type", [RepServer, RouterServer])
async def test_handler_error_answers_error_frame_and_keeps_serving(
    server_type: Callable[..., RepServer | RouterServer],
) -> None:
    server = server_type(LOCAL, failing)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            async with Client(addr, timeout=2, retries=1) as client:
                with pytest.raises(RemoteError, match="handler exploded"):
                    await client.send(b"boom")
                assert await client.send(b"fine") == b"ok:fine"
            # A plain REQ client sees the two-frame error reply.
            replies = await trio.to_thread.run_sync(blocking_req, addr, [b"boom"])
            nursery.cancel_scope.cancel()
    assert replies == [[b"ERROR", b"RuntimeError: handler exploded"]]
    assert server.metrics.errors == 2
    assert server.metrics.accesses == 3


async def test_multi_frame_request_is_answered_with_an_error() -> None:
    server = RouterServer(LOCAL, echo, workers=1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            async with Socket(zmq.DEALER) as dealer:
                dealer.connect(addr)
                await dealer.send_multipart([b"", b"a", b"b"])
                reply = await dealer.recv_multipart()
            nursery.cancel_scope.cancel()
    assert reply[:2] == [b"", b"ERROR"]
    assert b"one-frame" in reply[2]
    assert server.metrics.errors == 1


async def test_router_workers_handle_requests_concurrently() -> None:
    """With a handler that blocks, exactly `workers` requests are in progress at once."""
    workers, clients = 4, 10
    in_handler = 0
    peak = 0
    release = trio.Event()
    all_busy = trio.Event()

    async def slow(request: bytes) -> bytes:
        nonlocal in_handler, peak
        in_handler += 1
        peak = max(peak, in_handler)
        if in_handler == workers:
            all_busy.set()
        await release.wait()
        in_handler -= 1
        return request

    server = RouterServer(LOCAL, slow, workers=workers)
    # Count what the receiving task takes off the socket, to know when every request is in.
    arrived = 0
    all_arrived = trio.Event()
    receive = server._receive

    def counting_receive(sock: Socket, metrics: ServerMetrics) -> list[bytes] | None:
        nonlocal arrived
        frames = receive(sock, metrics)
        if frames:
            arrived += 1
            if arrived == clients:
                all_arrived.set()
        return frames

    server._receive = counting_receive  # type: ignore[method-assign]
    replies: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)

            async def one(i: int) -> None:
                async with Client(addr, identity=f"c{i}", timeout=5, retries=1) as client:
                    replies.append(await client.send(str(i)))

            async with trio.open_nursery() as inner:
                for i in range(clients):
                    inner.start_soon(one, i)
                await all_busy.wait()
                await all_arrived.wait()
                # Every request is queued or in a handler, and every task is blocked: a fifth
                # request would have started by now if the workers were not the bound.
                await trio.testing.wait_all_tasks_blocked()
                assert peak == workers
                release.set()
            nursery.cancel_scope.cancel()
    assert sorted(replies) == sorted(str(i).encode() for i in range(clients))
    assert server.metrics.n_clients == clients


async def test_metrics_file_is_checked_and_appended_off_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening and appending a file can block on a slow disk: neither runs on the event loop,
    and the append still happens although the server is shut down by a cancellation."""
    from trioprobe.zmqnet import _output

    on_loop: dict[str, bool] = {}
    real_check, real_write = _output.check_appendable, ServerMetrics.write

    def check(path: object) -> None:
        on_loop["check"] = threading.current_thread() is threading.main_thread()
        real_check(path)  # type: ignore[arg-type]

    def write(self: ServerMetrics, path: Path, extra: object = None) -> None:
        on_loop["write"] = threading.current_thread() is threading.main_thread()
        real_write(self, path, extra)  # type: ignore[arg-type]

    monkeypatch.setattr(_output, "check_appendable", check)
    monkeypatch.setattr(ServerMetrics, "write", write)
    out = tmp_path / "metrics.json"
    server = RouterServer(LOCAL, echo, workers=1, metrics_path=out)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            nursery.cancel_scope.cancel()
    assert on_loop == {"check": False, "write": False}
    assert json.loads(out.read_text())["server"] == "router"


async def test_metrics_json_line_written_on_shutdown(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    server = RouterServer(LOCAL, echo, workers=3, metrics_path=out)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            for name in ("alice", "bob"):
                async with Client(addr, identity=name, timeout=2) as client:
                    for _ in range(3):
                        await client.send(b"x")
            nursery.cancel_scope.cancel()
    (line,) = out.read_text().splitlines()
    data = json.loads(line)
    assert data["server"] == "router"
    assert data["accesses"] == 6
    assert data["clients"] == 2
    assert data["mean"] == 3.0
    assert data["duration"] > 0
    assert data["throughput"] == pytest.approx(6 / data["duration"])


def test_metrics_merge_keeps_earliest_start_and_latest_finish() -> None:
    from trioprobe.zmqnet import ServerMetrics

    a, b = ServerMetrics(), ServerMetrics()
    a.increment("x", 10.0)
    a.complete(11.0, 3)
    b.increment("x", 9.0)
    b.increment("y", 9.5)
    b.complete(12.0, 4)
    a.merge(b)
    assert (a.accesses, a.n_clients, a.client_mean) == (3, 2, 1.5)
    assert (a.started, a.finished, a.duration) == (9.0, 12.0, 3.0)
    assert a.throughput == 1.0
    assert ServerMetrics().throughput == 0.0


def test_metrics_count_at_most_max_clients_ids_and_the_rest_together() -> None:
    from trioprobe.zmqnet import ServerMetrics

    a = ServerMetrics(max_clients=2)
    for client in ("x", "y", "z", "w", "x", "z"):
        a.increment(client, 1.0)
    assert a.accesses_by_client == {"x": 2, "y": 1, OTHER_CLIENTS: 3}
    assert (a.accesses, a.n_clients, a.received) == (6, 3, 6)
    b = ServerMetrics(max_clients=2)
    b.increment("y", 2.0)
    b.increment("v", 2.0)
    a.merge(b)  # merging respects the bound too
    assert a.accesses_by_client == {"x": 2, "y": 2, OTHER_CLIENTS: 4}
    assert a.accesses == 8


@pytest.mark.parametrize("server_type", [RepServer, RouterServer])
async def test_server_bounds_tracked_clients(
    server_type: Callable[..., RepServer | RouterServer],
) -> None:
    """Every reconnect is a new identity: a long-running server must not remember them all.

    Going through a real server also shows it counts with ServerMetrics.increment (the bound
    lives there), so the unit-tested path is the one the servers use.
    """

    server = server_type(LOCAL, echo, max_clients=2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            for i in range(5):
                async with Client(addr, identity=f"c{i}", timeout=2) as client:
                    for _ in range(2):
                        assert await client.send(b"x") == b"x"
            nursery.cancel_scope.cancel()
    metrics = server.metrics
    assert metrics.accesses == 10
    assert metrics.n_clients == 3  # two ids counted one by one, plus the shared bucket
    assert metrics.accesses_by_client[OTHER_CLIENTS] == 6
    assert (metrics.received, metrics.sent) == (10, 10)
    assert metrics.bytes_sent == 10
    assert len(server._names) <= 2


async def test_servers_count_through_server_metrics_methods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The servers count with ServerMetrics.increment/complete (tested above), not a copy."""
    from trioprobe.zmqnet import ServerMetrics

    calls: list[str] = []
    increment, complete = ServerMetrics.increment, ServerMetrics.complete

    def spy_increment(self: ServerMetrics, client: str, now: float) -> None:
        calls.append("increment")
        increment(self, client, now)

    def spy_complete(self: ServerMetrics, now: float, nbytes: int) -> None:
        calls.append("complete")
        complete(self, now, nbytes)

    monkeypatch.setattr(ServerMetrics, "increment", spy_increment)
    monkeypatch.setattr(ServerMetrics, "complete", spy_complete)
    for server in (RepServer(LOCAL, echo), RouterServer(LOCAL, echo, workers=2)):
        calls.clear()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                addr = await nursery.start(server.run)
                async with Client(addr, timeout=2) as client:
                    for _ in range(3):
                        await client.send(b"abc")
                nursery.cancel_scope.cancel()
        assert calls == ["increment", "complete"] * 3
        assert (server.metrics.accesses, server.metrics.bytes_sent) == (3, 9)


def run_plain_server(kind: int, ready: threading.Event, addr_out: list[str], count: int) -> None:
    """A plain blocking pyzmq REP or ROUTER server answering `count` requests (runs in a thread)."""
    sock: zmq.Socket[bytes] = shared_context().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        sock.bind("tcp://127.0.0.1:*")
        addr_out.append(sock.getsockopt(zmq.LAST_ENDPOINT).decode())  # type: ignore[union-attr]
        ready.set()
        for _ in range(count):
            if kind == zmq.REP:
                sock.send(b"plain:" + sock.recv())
            else:
                *envelope, body = sock.recv_multipart()
                sock.send_multipart([*envelope, b"plain:" + body])
    finally:
        sock.close()


@pytest.mark.parametrize("kind", [zmq.REP, zmq.ROUTER], ids=["REP", "ROUTER"])
async def test_our_client_against_plain_pyzmq_server(kind: int) -> None:
    ready = threading.Event()
    addr_out: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, run_plain_server, kind, ready, addr_out, 3)
            await trio.to_thread.run_sync(ready.wait)
            async with Client(addr_out[0], timeout=2) as client:
                replies = [await client.send(m) for m in ("a", "b", "c")]
    assert replies == [b"plain:a", b"plain:b", b"plain:c"]


@pytest.mark.parametrize("server_type", [RepServer, RouterServer])
async def test_unwritable_metrics_path_fails_before_binding(
    tmp_path: Path, server_type: Callable[..., RepServer | RouterServer]
) -> None:
    """Not at shutdown, when the metrics of the whole run would be lost."""
    missing = tmp_path / "missing" / "metrics.json"
    server = server_type(LOCAL, echo, metrics_path=missing)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(FileNotFoundError) as info:
                await nursery.start(server.run)
    assert info.value.filename == str(missing)
    assert server.address is None  # never bound


# --- hostile clients (issue 12) -----------------------------------------------------------------

SERVER_TYPES = pytest.mark.parametrize("server_type", [RepServer, RouterServer])


def test_default_address_is_loopback() -> None:
    assert DEFAULT_ADDR == "tcp://127.0.0.1:4157"
    assert RepServer().addr == RouterServer().addr == DEFAULT_ADDR


async def timed_send(client: Client, message: bytes, times: ResponseTimes) -> None:
    with times.measure():
        assert await client.send(message) == message


@SERVER_TYPES
async def test_a_flooding_client_that_never_reads_cannot_freeze_the_server(
    server_type: Callable[..., RepServer | RouterServer],
) -> None:
    """The attack of issue 12, item 2: send requests as fast as possible, read no reply. The
    server used to spin for good on the first reply it could not deliver."""

    async def handler(request: bytes) -> bytes:
        # Big replies fill the flooder's TCP buffers and pipe after a few hundred requests.
        return b"z" * 16384 if request == b"flood" else request

    server = server_type(LOCAL, handler)
    flooder = Socket(zmq.DEALER, identity=b"flooder")
    flooder.zmq_socket.setsockopt(zmq.RCVHWM, 1)
    flooder.zmq_socket.setsockopt(zmq.RCVBUF, 4096)
    during, after = ResponseTimes(), ResponseTimes()
    try:
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            flooder.connect(addr)
            async with Client(addr, identity="good", timeout=30, retries=1) as good:
                await good.send(b"warm-up")  # connect before timing anything
                flooded = trio.Event()

                async def flood() -> None:
                    # Until the server has had to drop a good number of replies: the flooder's
                    # pipe is full for sure, and stays so.
                    while server.metrics.dropped < 500:
                        await flooder.send_multipart([b"", b"flood"])
                    flooded.set()

                async def well_behaved() -> None:
                    while not flooded.is_set():
                        await timed_send(good, b"ping", during)

                with trio.fail_after(60):  # hang guard only
                    async with trio.open_nursery() as clients:
                        clients.start_soon(flood)
                        clients.start_soon(well_behaved)
                    # A median of enough requests that one slow one cannot decide it.
                    for _ in range(21):
                        await timed_send(good, b"after", after)
            nursery.cancel_scope.cancel()
    finally:
        await flooder.aclose()
    during.check(0.1)
    after.check(0.1)
    assert server.metrics.dropped >= 500


@SERVER_TYPES
async def test_a_hung_handler_is_cancelled_at_the_deadline(
    server_type: Callable[..., RepServer | RouterServer],
) -> None:
    server = server_type(LOCAL, hang_or_echo, handler_timeout=0.2)
    with trio.fail_after(30):  # hang guard only
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            async with Client(addr, timeout=20, retries=1) as client:
                with pytest.raises(RemoteError, match=r"handler timed out after 0\.2s"):
                    await client.send(b"hang")
                assert await client.send(b"still here") == b"still here"
            nursery.cancel_scope.cancel()
    assert server.metrics.timeouts == 1
    assert server.metrics.received == 2


async def test_router_hung_handlers_do_not_starve_other_clients() -> None:
    """Hung handlers hold their workers; the other workers keep answering everyone else."""
    workers = 4
    hanging = 0
    all_hanging = trio.Event()

    async def handler(request: bytes) -> bytes:
        nonlocal hanging
        if request == b"hang":
            hanging += 1
            if hanging == workers - 1:
                all_hanging.set()
            await trio.sleep_forever()
        return request

    server = RouterServer(LOCAL, handler, workers=workers, handler_timeout=30)
    with trio.fail_after(20):  # hang guard only; the deadline (30 s) never fires
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)

            async def hang(i: int) -> None:
                async with Client(addr, identity=f"hang{i}", timeout=60, retries=1) as client:
                    await client.send(b"hang")

            for i in range(workers - 1):
                nursery.start_soon(hang, i)
            await all_hanging.wait()
            async with Client(addr, identity="good", timeout=20, retries=1) as good:
                for i in range(20):
                    assert await good.send(str(i)) == str(i).encode()
            assert server.metrics.timeouts == 0
            nursery.cancel_scope.cancel()


@SERVER_TYPES
async def test_all_handlers_hung_are_freed_by_the_deadline(
    server_type: Callable[..., RepServer | RouterServer],
) -> None:
    """One hung handler stopped a RepServer and `workers` stopped a RouterServer, for good."""

    kwargs = {"workers": 2} if server_type is RouterServer else {}
    server = server_type(LOCAL, hang_or_echo, handler_timeout=0.3, **kwargs)
    hung = 2 if server_type is RouterServer else 1
    with trio.fail_after(30):  # hang guard only
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)

            async def hang(i: int) -> None:
                async with Client(addr, identity=f"hang{i}", timeout=60, retries=1) as client:
                    with pytest.raises(RemoteError, match="timed out"):
                        await client.send(b"hang")

            async with trio.open_nursery() as inner:
                for i in range(hung):
                    inner.start_soon(hang, i)
                async with Client(addr, identity="good", timeout=20, retries=1) as good:
                    assert await good.send(b"ping") == b"ping"
            nursery.cancel_scope.cancel()
    assert server.metrics.timeouts == hung


@SERVER_TYPES
@pytest.mark.parametrize(
    ("body", "what"),
    [
        # Each frame is within libzmq's per-frame limit (1 MiB); the message is not.
        ([b"a" * 600_000, b"b" * 600_000], "1200"),
        ([b"f"] * 9, "11 frame"),
    ],
)
async def test_requests_over_the_message_limits_are_refused_and_counted(
    server_type: Callable[..., RepServer | RouterServer], body: list[bytes], what: str
) -> None:
    server = server_type(LOCAL, echo)
    dealer = Socket(zmq.DEALER, identity=b"big")
    try:
        with trio.fail_after(30):  # hang guard only
            async with trio.open_nursery() as nursery:
                addr = await nursery.start(server.run)
                dealer.connect(addr)
                reply = await dealer.request([b"", *body])
                assert reply[:2] == [b"", b"ERROR"]
                assert what.encode() in reply[2]
                assert b"over the limit" in reply[2]
                assert await dealer.request([b"", b"small"]) == [b"", b"small"]
                nursery.cancel_scope.cancel()
    finally:
        await dealer.aclose()
    assert server.metrics.oversized == 1
    assert server.metrics.received == 1  # the handler saw only the small one


async def test_client_reports_an_oversized_reply_without_resending() -> None:
    big = b"x" * (2 << 20)

    async def handler(request: bytes) -> bytes:
        return big

    server = RepServer(LOCAL, handler)
    with trio.fail_after(30):  # hang guard only
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            async with Client(addr, timeout=20, retries=3) as client:
                with pytest.raises(ReplyTooLargeError, match=r"2097152 bytes.*1048576"):
                    await client.send(b"please")
                assert client.timeouts == 0
            assert server.metrics.received == 1  # not sent again
            async with Client(addr, timeout=20, retries=1, max_reply_size=4 << 20) as client:
                assert await client.send(b"please") == big
            nursery.cancel_scope.cancel()
