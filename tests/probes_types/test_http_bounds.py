"""Issue 24 items 1 and 4c: what a hostile http target can make a probe hold or do.

Bodies are bounded on both paths (bytes read and bytes decompressed, 4 MiB by default), with
nothing buffered past the limit (measured with tracemalloc); informational responses are
bounded per exchange; bytes sent past a response (an unasked second one) cost the connection,
so they are never taken as the next probe's answer. Peers are loopback servers written here,
each sending a bounded amount.
"""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio

from trioprobe import _lean_http
from trioprobe._httpbody import MAX_BODY_BYTES, BodyTooLarge
from trioprobe._tls import load_ssl_context
from trioprobe.metrics import Map
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.probing.prober import ProbeRecord, open_prober
from trioprobe.results import ProbeResult

GUARD = 30
# The most any server here sends: well past the limit, far below what would hurt the machine.
SEND_CAP = 16 * 1024 * 1024
CHUNK = 64 * 1024
TRANSPORTS = ["auto", "httpx"]
Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def _serve(nursery: trio.Nursery, handler: Handler) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"


async def _read_request(stream: trio.SocketStream) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return False
        data += chunk
    return True


async def _stream_body(
    head: bytes, chunked: bool, sent: list[int], stream: trio.SocketStream
) -> None:
    """Answer with ``head`` and then up to SEND_CAP bytes of body, counting what was sent."""
    try:
        await _read_request(stream)
        await stream.send_all(head)
        piece = b"x" * CHUNK
        framed = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        while sent[0] < SEND_CAP:
            await stream.send_all(framed)
            sent[0] += len(piece)
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


async def _probe_once(url: str, transport: str, **options: Any) -> ProbeResult:
    await load_ssl_context(True)
    probe = HTTPProbe(Options(transport=transport, **options), list, interval=1.0, timeout=20.0)
    try:
        with trio.fail_after(GUARD):
            return await probe.probe_once(url)
    finally:
        await probe._clients.aclose()


def _limit_error(result: ProbeResult, limit: int = MAX_BODY_BYTES) -> None:
    assert not result.success
    assert result.error is not None
    assert result.error.startswith("ReadError: ")
    assert f"larger than the {limit}-byte limit" in result.error


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_declared_1_gib_body_fails_without_being_buffered(
    nursery: trio.Nursery, transport: str
) -> None:
    sent = [0]
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"
    url = await _serve(nursery, partial(_stream_body, head, False, sent))
    tracemalloc.start()
    try:
        result = await _probe_once(url, transport)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _limit_error(result)
    assert peak < MAX_BODY_BYTES + 4 * 1024 * 1024, peak


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_endless_chunked_body_stops_at_the_limit(
    nursery: trio.Nursery, transport: str
) -> None:
    sent = [0]
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    url = await _serve(nursery, partial(_stream_body, head, True, sent))
    tracemalloc.start()
    try:
        result = await _probe_once(url, transport, max_body_bytes=1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _limit_error(result, 1024 * 1024)
    # Nothing held past the limit (plus a read or two in flight).
    assert peak < 1024 * 1024 + 3 * 1024 * 1024, peak


BOMB_SIZE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    return gzip.compress(b"\0" * BOMB_SIZE, compresslevel=9)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_gzip_bomb_is_not_inflated_past_the_limit(
    nursery: trio.Nursery, transport: str, gzip_bomb: bytes
) -> None:
    assert len(gzip_bomb) < MAX_BODY_BYTES  # the bytes read pass; only decompression can fail
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(
        gzip_bomb
    )

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _read_request(stream)
            await stream.send_all(head + gzip_bomb)
        except trio.BrokenResourceError:
            pass
        await stream.aclose()

    url = await _serve(nursery, handler)
    tracemalloc.start()
    try:
        # A validator, so the lean path decodes the body too.
        result = await _probe_once(url, transport, body_regex="x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _limit_error(result)
    assert "decompressed" in (result.error or "")
    assert peak < 3 * MAX_BODY_BYTES, peak  # never the 64 MiB it inflates to


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_gzip_body_under_the_limit_is_decoded_for_the_validators(
    nursery: trio.Nursery, transport: str
) -> None:
    body = gzip.compress(b'{"status": "ok"}')
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def handler(stream: trio.SocketStream) -> None:
        await _read_request(stream)
        await stream.send_all(head + body)
        await stream.aclose()

    url = await _serve(nursery, handler)
    result = await _probe_once(url, transport, json_paths={"status": "ok"})
    assert result.success, result.error


# -- 4c: informational responses, and bytes nobody asked for ------------------------------------


async def _informational_then_ok(count: int, stream: trio.SocketStream) -> None:
    try:
        await _read_request(stream)
        await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n" * count)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except trio.BrokenResourceError:
        pass
    await stream.aclose()


async def test_a_flood_of_100_continue_fails_the_exchange(nursery: trio.Nursery) -> None:
    url = await _serve(nursery, partial(_informational_then_ok, 5000))
    result = await _probe_once(url, "auto")
    assert not result.success
    assert result.error == (
        f"RemoteProtocolError: more than {_lean_http.MAX_INFORMATIONAL} informational (1xx) "
        "responses to one request"
    )


async def test_a_flood_of_100_continue_lets_other_tasks_run(nursery: trio.Nursery) -> None:
    # The probe checkpoints after each informational response: a task waiting on the loop
    # runs at least once per response the probe got through.
    url = await _serve(nursery, partial(_informational_then_ok, _lean_http.MAX_INFORMATIONAL))
    ticks = 0
    stop = trio.Event()

    async def other() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await trio.lowlevel.checkpoint()

    probe = HTTPProbe(Options(), list, interval=1.0, timeout=20.0)
    async with trio.open_nursery() as inner:
        inner.start_soon(other)
        await trio.lowlevel.checkpoint()
        before = ticks
        with trio.fail_after(GUARD):
            result = await probe.probe_once(url)
        stop.set()
    await probe._clients.aclose()
    assert result.success, result.error
    assert ticks - before >= _lean_http.MAX_INFORMATIONAL


async def test_a_few_informational_responses_are_fine(nursery: trio.Nursery) -> None:
    url = await _serve(nursery, partial(_informational_then_ok, 2))
    result = await _probe_once(url, "auto")
    assert result.success, result.error


async def test_an_unasked_second_response_is_never_the_next_answer(nursery: trio.Nursery) -> None:
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        # Each request gets its answer, and the first one on each connection also an unasked
        # second response in the same write: a desynchronised (or smuggling) server.
        nonlocal connections
        connections += 1
        first = True
        try:
            while await _read_request(stream):
                reply = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nanswer"
                if first:
                    reply += b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nunasked!"
                    first = False
                await stream.send_all(reply)
        except trio.BrokenResourceError:
            pass
        await stream.aclose()

    url = await _serve(nursery, handler)
    probe = HTTPProbe(
        Options(body_regex="^answer$", detail="full"), list, interval=1.0, timeout=20.0
    )
    try:
        results = []
        for _ in range(3):
            with trio.fail_after(GUARD):
                results.append(await probe.probe_once(url))
    finally:
        await probe._clients.aclose()
    assert all(r.success for r in results), [r.error for r in results]
    # Every probe on a new connection: each connection's first answer came with unasked bytes.
    states = [r.extras["connections"] for r in results]
    assert all(isinstance(s, Map) and s.values == {"new": 1} for s in states), states
    assert connections == 3


async def test_etcd_probing_health_replies_are_bounded_too(nursery: trio.Nursery) -> None:
    sent = [0]
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    url = await _serve(nursery, partial(_stream_body, head, True, sent))
    records_send, records_receive = trio.open_memory_channel[ProbeRecord](10)
    with trio.fail_after(GUARD):
        async with open_prober(records=records_send) as prober:
            prober.add_http("t", 1.0, [url + "health"], timeout=20.0, first_probe_after=0.0)
            record = await records_receive.receive()
    assert not record.success
    assert isinstance(record.error, BodyTooLarge)
    assert sent[0] <= SEND_CAP
