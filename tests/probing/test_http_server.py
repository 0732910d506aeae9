"""The h11 server (``trioprobe._asgi``) against hostile clients: framing, idle floods, slots."""

from __future__ import annotations

from functools import partial

import trio

from trioprobe._asgi import HTTPServerStats, serve_asgi
from trioprobe.probing import health_app

from .test_health import port_of, raw_exchange

# A request framed both ways: chunked, h11 sees an empty body and then a second request; framed
# by its length (as a proxy might), the "second request" is the body of the first (issue 24 #12).
SMUGGLED = (
    b"POST /raft/probing HTTP/1.1\r\nHost: x\r\nContent-Length: 45\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
)


async def test_content_length_with_transfer_encoding_is_refused_and_closed(
    nursery: trio.Nursery,
) -> None:
    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_asgi, health_app, stats=stats))
    with trio.fail_after(10):  # hang guard only
        reply = await raw_exchange(port_of(url), SMUGGLED)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    # One answer only: the hidden request was never served.
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert b"Content-Length and Transfer-Encoding" in reply
    assert stats.bad_requests == 1
    assert stats.requests == 0
    nursery.cancel_scope.cancel()


async def test_http_1_0_without_host_and_obs_fold_are_accepted(nursery: trio.Nursery) -> None:
    # Both documented in docs/probing.md, "Hostile clients": harmless to these apps.
    url = await nursery.start(serve_asgi, health_app)
    with trio.fail_after(10):
        reply = await raw_exchange(port_of(url), b"GET /raft/probing HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200"), reply
        folded = (
            b"GET /raft/probing HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n"
            b"Connection: close\r\n\r\n"
        )
        reply = await raw_exchange(port_of(url), folded)
        assert reply.startswith(b"HTTP/1.1 200"), reply
    nursery.cancel_scope.cancel()
