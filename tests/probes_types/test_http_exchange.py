"""The transport-neutral exchange result: both client transports of the http probe (httpx and the
h11 path) return the same Exchange for the same reply, and the validators read it the same way,
as httpx.Response read it before (text charset, repeated headers, a body compressed unasked).
``fail_after`` is only a hang guard."""

from __future__ import annotations

import gzip
from collections.abc import MutableMapping
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from trioprobe._asgi import answer_lifespan, serve_asgi
from trioprobe._exchange import Exchange
from trioprobe.probes._http_targets import H11Target, HTTPTarget, HttpxTarget
from trioprobe.probes.http_probe import HTTPProbe, Options

GUARD = 30
_BODY = "café ok".encode("latin-1")
_HEADERS = [
    (b"content-type", b"text/plain; charset=latin-1"),
    (b"x-multi", b"one"),
    (b"X-Multi", b"two"),
]


async def _app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    body = gzip.compress(_BODY) if scope["path"] == "/gzip" else _BODY
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    if scope["path"] == "/gzip":
        headers.append((b"content-encoding", b"gzip"))
    await send({"type": "http.response.start", "status": 203, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _exchanges(nursery: trio.Nursery, path: str, transport: str) -> list[Exchange]:
    base: str = await nursery.start(partial(serve_asgi, _app))
    url = base + path
    probe = HTTPProbe(Options(transport=transport), lambda: [url], interval=1.0, timeout=GUARD)
    state: HTTPTarget = probe._new_target(url)
    assert isinstance(state, H11Target if transport == "auto" else HttpxTarget)
    try:
        with trio.fail_after(GUARD):
            return [await state.exchange() for _ in range(2)]
    finally:
        await state.aclose()


@pytest.mark.parametrize("transport", ["auto", "httpx"])
async def test_both_transports_return_the_same_exchange(
    nursery: trio.Nursery, transport: str
) -> None:
    first, second = await _exchanges(nursery, "/plain", transport)
    for exchange in (first, second):
        assert exchange.status == 203
        assert exchange.reason == ""  # our server sends no reason phrase
        assert [(k.lower(), v) for k, v in exchange.headers][:3] == [
            (k.lower(), v) for k, v in _HEADERS
        ]
        assert exchange.body == _BODY
        assert exchange.tls is None
        assert exchange.requests == 1
        assert exchange.redirects == 0
        assert set(exchange.phases) >= {"send", "ttfb", "transfer"}
    # Kept alive: the second exchange reused the first one's connection.
    assert (first.new_connection, first.new_connections) == (True, 1)
    assert (second.new_connection, second.new_connections) == (False, 0)
    assert "connect" in first.phases
    assert "connect" not in second.phases
    assert second.setup_time == 0.0


@pytest.mark.parametrize("transport", ["auto", "httpx"])
async def test_the_validators_read_an_exchange_as_httpx_read_a_response(
    nursery: trio.Nursery, transport: str
) -> None:
    exchange, _ = await _exchanges(nursery, "/gzip", transport)
    decoded = exchange.decoded()
    assert decoded.body == _BODY  # compressed unasked: decoded for the validators
    reference = httpx.Response(exchange.status, headers=list(_HEADERS), content=decoded.body)
    headers = decoded.header_view()
    assert decoded.text() == reference.text == "café ok"
    assert headers.get_list("x-multi") == ["one", "two"]


async def test_a_body_compressed_unasked_is_decoded_under_the_limit() -> None:
    bomb = gzip.compress(b"a" * 10_000)
    exchange = Exchange(200, "OK", [(b"Content-Encoding", b"gzip")], bomb, decode_pending=True)
    with pytest.raises(httpx.ReadError, match="larger than the 100-byte limit"):
        exchange.decoded(100)
    assert exchange.decoded(20_000).body == b"a" * 10_000
    # Decoded already (the httpx path decodes while reading): kept as it is.
    plain = Exchange(200, "OK", [(b"Content-Encoding", b"gzip")], b"raw")
    assert plain.decoded(1) is plain


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        (b"text/plain", "é".encode(), "é"),
        (b"text/plain; charset=latin-1", "é".encode("latin-1"), "é"),
        (b"text/plain; charset=no-such-codec", "é".encode(), "é"),
        (None, b"\xff", "\ufffd"),
    ],
)
def test_text_decodes_as_httpx_does(content_type: bytes | None, body: bytes, text: str) -> None:
    headers = [] if content_type is None else [(b"Content-Type", content_type)]
    exchange = Exchange(200, "OK", headers, body)
    assert exchange.text() == httpx.Response(200, headers=headers, content=body).text == text


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"Content-Encoding", b"gzip")],
        [(b"content-encoding", b"gzip"), (b"X", b"y"), (b"CONTENT-ENCODING", b"br")],
        [(b"Content-Encoding", "é".encode())],
        [(b"Content-Encoding", b"\xff")],
    ],
)
def test_one_header_reads_as_httpx_headers_get(headers: list[tuple[bytes, bytes]]) -> None:
    """``Exchange.header`` reads the raw list (no httpx.Headers built per probe) and gives what
    ``httpx.Headers.get`` gives: fields joined with ", ", any case, decoded as httpx does."""
    exchange = Exchange(200, "OK", headers, b"")
    assert exchange.header(b"content-encoding") == httpx.Headers(headers).get("content-encoding")
