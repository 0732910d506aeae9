"""The health endpoint: in-memory ASGI calls, and real sockets against ``serve_health``."""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from trioprobe._asgi import MAX_BODY_BYTES, HTTPServerStats, answer_lifespan, serve_asgi
from trioprobe._ratelog import RateLimitedLog
from trioprobe.probing import health_app, serve_health
from trioprobe.probing.health import DEFAULT_PATH, HealthApp, format_rfc3339_nano
from trioprobe.probing.prober import parse_rfc3339_nano

from ..responsiveness import ResponseTimes

FIXED_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


async def call(
    app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Run one ASGI call in memory and return what the app sent."""
    queue = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str, method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}


def test_format_rfc3339_nano_is_utc_with_nine_digits() -> None:
    assert format_rfc3339_nano(FIXED_NS) == "2023-11-14T22:13:20.123456789Z"
    assert format_rfc3339_nano(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_rfc3339_nano(1_000_000_007) == "1970-01-01T00:00:01.000000007Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20.123456789Z", 1_700_000_000.123456789),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T23:13:20.5+01:00", 1_700_000_000.5),  # Go emits local offsets
        ("2023-11-14T21:43:20.25-00:30", 1_700_000_000.25),
        ("2023-11-14t22:13:20.1z", 1_700_000_000.1),
    ],
)
def test_parse_rfc3339_nano(text: str, expected: float) -> None:
    assert parse_rfc3339_nano(text) == pytest.approx(expected, abs=1e-6)
    assert parse_rfc3339_nano(text) == pytest.approx(expected, abs=1e-6)  # cached minute


def test_parse_leap_second_like_go() -> None:
    assert parse_rfc3339_nano("2016-12-31T23:59:60Z") == 1_483_228_800.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2023-11-14 22:13:20Z",
        "2023-13-14T22:13:20Z",
        "2023-02-30T22:13:20Z",
        "2023-11-14T22:13:61Z",
        "2023-11-14T22:13:20",
        "2023-11-14T22:13:20.1234567891Z",
    ],
)
def test_parse_rfc3339_nano_rejects_garbage_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 time") as info:
        parse_rfc3339_nano(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "DELETE", "PATCH"])
async def test_any_method_on_the_path_gets_the_health_reply(method: str) -> None:
    app = HealthApp(wall_clock_ns=lambda: FIXED_NS)
    sent = await call(app, http_scope(DEFAULT_PATH, method))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    body = sent[1]["body"]
    assert int(headers[b"content-length"]) == len(body)
    # Exactly the bytes Go's json.Encoder writes for probing.Health (plus its newline).
    assert body == b'{"OK":true,"Now":"2023-11-14T22:13:20.123456789Z"}\n'


async def test_other_paths_get_404() -> None:
    for path in ["/", "/raft/probing/", "/raft", "/health"]:
        sent = await call(health_app, http_scope(path))
        assert sent[0]["status"] == 404, path
        assert b"OK" not in sent[1]["body"]


async def test_custom_path() -> None:
    app = HealthApp(path="/health")
    assert (await call(app, http_scope("/health")))[0]["status"] == 200
    assert (await call(app, http_scope(DEFAULT_PATH)))[0]["status"] == 404


async def test_default_app_reports_the_current_wall_clock() -> None:
    before = time.time()
    sent = await call(health_app, http_scope(DEFAULT_PATH))
    after = time.time()
    reply = json.loads(sent[1]["body"])
    assert reply["OK"] is True
    assert before - 1e-6 <= parse_rfc3339_nano(reply["Now"]) <= after + 1e-6


async def test_lifespan_startup_and_shutdown_are_acknowledged() -> None:
    sent = await call(
        health_app,
        {"type": "lifespan", "asgi": {"version": "3.0"}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_websocket_is_refused() -> None:
    sent = await call(
        health_app, {"type": "websocket", "path": DEFAULT_PATH}, [{"type": "websocket.connect"}]
    )
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_unknown_scope_type_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'weird'"):
        await call(health_app, {"type": "weird"})


# --- real sockets -------------------------------------------------------------------------------


async def test_serve_health_reports_its_url_and_answers(nursery: trio.Nursery) -> None:
    url = await nursery.start(serve_health)
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith(DEFAULT_PATH)
    assert not url.endswith(":0" + DEFAULT_PATH)
    async with httpx.AsyncClient() as client:
        for method in ("GET", "POST", "PUT"):
            before = time.time()
            response = await client.request(method, url)
            after = time.time()
            assert response.status_code == 200
            assert response.text.endswith("}\n")
            reply = response.json()
            assert reply["OK"] is True
            assert before - 1e-3 <= parse_rfc3339_nano(reply["Now"]) <= after + 1e-3
        other = await client.get(url.removesuffix(DEFAULT_PATH) + "/nope")
        assert other.status_code == 404
    nursery.cancel_scope.cancel()


async def test_serve_health_custom_path(nursery: trio.Nursery) -> None:
    url = await nursery.start(
        lambda task_status: serve_health(path="/health", task_status=task_status)
    )
    assert url.endswith(":" + url.split(":")[2].split("/")[0] + "/health")
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).json()["OK"] is True
    nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\r\n\r\n",
        b"GET /raft/probing HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /raft/probing HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /raft/probing HTTP/1.1\r\nbad header line\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ],
)
async def test_garbage_requests_get_4xx_and_the_server_survives(
    nursery: trio.Nursery, garbage: bytes
) -> None:
    url = await nursery.start(serve_health)
    port = int(httpx.URL(url).port or 0)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(garbage)
        with trio.fail_after(5):
            head = await stream.receive_some(4096)
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), head
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 200
    nursery.cancel_scope.cancel()


async def test_serve_health_rejects_a_relative_path() -> None:
    with pytest.raises(ValueError, match="'health'"):
        await serve_health(path="health")


async def test_serve_health_stops_on_cancel_and_frees_the_port() -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_health)
        nursery.cancel_scope.cancel()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)


# --- hostile clients ----------------------------------------------------------------------------

# Under Hypercorn this body killed the whole server: its 400 and its EOF were sent from two tasks
# at once and the BusyResourceError escaped the listener's nursery (issue 12, item 1).
CHUNKED_ATTACK = (
    b"POST /raft/probing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdeXX\r\n"
)
GOOD_REQUEST = b"GET /raft/probing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def port_of(url: str) -> int:
    return int(httpx.URL(url).port or 0)


async def read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and return everything until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        try:
            return await read_all(stream)
        except trio.BrokenResourceError:
            return b""  # reset by the server: fine for an attacker


async def good_request(port: int) -> None:
    """One well-behaved request, answered in full."""
    reply = await raw_exchange(port, GOOD_REQUEST)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert b'"OK":true' in reply


async def test_malformed_chunked_attack_is_contained(nursery: trio.Nursery) -> None:
    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_health, stats=stats))
    port = port_of(url)
    attacks = 50
    during, after = ResponseTimes(), ResponseTimes()
    attacked = trio.Event()

    async def attacker() -> None:
        for _ in range(attacks):
            reply = await raw_exchange(port, CHUNKED_ATTACK)
            # The app may already have answered 200 before the bad chunk was parsed.
            assert reply == b"" or reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 200")), reply
        attacked.set()

    async def well_behaved() -> None:
        while not attacked.is_set():
            with during.measure():
                await good_request(port)

    with trio.fail_after(60):  # hang guard only
        async with trio.open_nursery() as clients:
            clients.start_soon(attacker)
            clients.start_soon(well_behaved)
        for _ in range(21):  # a median of enough requests that one slow one cannot decide it
            with after.measure():
                await good_request(port)
    during.check(0.1)
    after.check(0.1)
    assert stats.bad_requests >= 1
    assert stats.errors == 0
    assert stats.requests >= len(during) + len(after)
    nursery.cancel_scope.cancel()


async def test_bad_requests_are_logged_rate_limited(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_health, stats=stats))
    with caplog.at_level(logging.WARNING, logger="trioprobe.http"):
        for _ in range(20):
            reply = await raw_exchange(port_of(url), b"garbage\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 400")
    assert stats.bad_requests == 20
    lines = [r for r in caplog.records if r.name == "trioprobe.http"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "bad request" in lines[0].getMessage()
    nursery.cancel_scope.cancel()


async def test_oversized_body_gets_413(nursery: trio.Nursery) -> None:
    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_health, stats=stats))
    size = MAX_BODY_BYTES + 1
    head = f"POST /raft/probing HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    reply = await raw_exchange(port_of(url), head + b"x" * size)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    assert stats.bad_requests == 1
    nursery.cancel_scope.cancel()


async def test_slow_client_is_closed_after_the_request_timeout(autojump_clock: object) -> None:
    stats = HTTPServerStats()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_asgi, health_app, stats=stats, request_timeout=5))
        host_port = url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host_port[0], int(host_port[1]))
        async with stream:
            start = trio.current_time()
            await stream.send_all(b"GET /raft/probing HTTP/1.1\r\nHo")  # and never the rest
            assert await read_all(stream) == b""
            assert trio.current_time() - start == pytest.approx(5, abs=0.5)
        assert stats.timeouts == 1
        nursery.cancel_scope.cancel()


async def test_connections_over_the_limit_are_closed_at_once(nursery: trio.Nursery) -> None:
    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_asgi, health_app, stats=stats, max_connections=2))
    port = port_of(url)
    held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
    for stream in held:
        # A request in progress: its slot is not idle, so it is not shed for a new client
        # (tests/probing/test_http_server.py has the shedding of idle ones).
        await stream.send_all(b"GET /raft/probing HTTP/1.1\r\nHo")
    await trio.testing.wait_all_tasks_blocked()
    assert await raw_exchange(port, GOOD_REQUEST) == b""
    assert stats.rejected == 1
    for stream in held:
        await stream.aclose()
    # The server sees both EOFs (loopback delivers them at once) and frees the slots.
    await trio.testing.wait_all_tasks_blocked()
    await good_request(port)
    assert stats.rejected == 1
    nursery.cancel_scope.cancel()


async def test_an_app_error_answers_500_and_is_counted(nursery: trio.Nursery) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        raise RuntimeError("boom")

    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_asgi, broken, stats=stats))
    reply = await raw_exchange(port_of(url), GOOD_REQUEST)
    assert reply.startswith(b"HTTP/1.1 500"), reply
    assert stats.errors == 1
    nursery.cancel_scope.cancel()


async def test_address_in_use_names_the_address(nursery: trio.Nursery) -> None:
    url = await nursery.start(serve_health)
    port = port_of(url)
    # Itself, not in serve_health's nursery's group.
    with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
        await serve_health(port=port)
    nursery.cancel_scope.cancel()


def test_rate_limited_log_counts_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    ratelog = RateLimitedLog(logging.getLogger("test.ratelog"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        assert ratelog.warning("a", "first %d", 1)
        assert not ratelog.warning("a", "second")
        assert not ratelog.warning("a", "third")
        assert ratelog.warning("b", "another kind")
        now[0] = 10.0
        assert ratelog.warning("a", "fourth %s", "x")
    assert [r.getMessage() for r in caplog.records] == [
        "first 1",
        "another kind",
        "fourth x (2 more like this not logged)",
    ]


async def test_an_idle_keep_alive_connection_is_closed_quietly(autojump_clock: object) -> None:
    stats = HTTPServerStats()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_asgi, health_app, stats=stats, request_timeout=5))
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        async with stream:
            await stream.send_all(b"GET /raft/probing HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while b"}\n" not in reply:
                reply += await stream.receive_some(65536)
            assert reply.startswith(b"HTTP/1.1 200")
            start = trio.current_time()
            assert await read_all(stream) == b""  # closed by the server, after the idle time
            assert trio.current_time() - start == pytest.approx(5, abs=0.5)
        assert stats.timeouts == 0
        assert stats.requests == 1
        nursery.cancel_scope.cancel()
