"""RepServer and RouterServer, and interop with plain blocking pyzmq peers (real time, loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import zmq

from trioprobe.zmqnet import (
    Client,
    RemoteError,
    RepServer,
    RouterServer,
    Socket,
    shared_context,
)

LOCAL = "tcp://127.0.0.1:0"


async def echo(request: bytes) -> bytes:
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
                await trio.sleep(0.1)  # give a fifth request the chance to (wrongly) start
                assert peak == workers
                release.set()
            nursery.cancel_scope.cancel()
    assert sorted(replies) == sorted(str(i).encode() for i in range(clients))
    assert server.metrics.n_clients == clients


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
    from trioprobe.zmqnet import OTHER_CLIENTS, ServerMetrics

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
    from trioprobe.zmqnet import OTHER_CLIENTS

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
