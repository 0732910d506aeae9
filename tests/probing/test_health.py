"""The health endpoint: in-memory ASGI calls, and real sockets against ``serve_health``."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import trio

from trioprobe.probing import (
    DEFAULT_PATH,
    HealthApp,
    format_rfc3339_nano,
    health_app,
    parse_rfc3339_nano,
    serve_health,
)

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
