"""etcd's gateway when etcd goes away in the middle of a request body.

A soak run of tests/real/test_fleet_etcd.py failed once on Trio's ResourceWarning "Async generator
'httpx._content.ByteStream.__aiter__' was garbage collected before it had been exhausted" after
etcd restarted: httpcore iterates httpx's request body (an async generator) without closing it,
so a body whose send fails (reset: httpcore swallows the write error to read a reply) or is
cancelled (a deadline) leaves the generator suspended. A real TCP server on loopback that stops
reading makes the send block deterministically; the clock is Trio's MockClock.
"""

from __future__ import annotations

import functools
import gc
import socket
import struct
import warnings
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio
import trio.lowlevel

from trioprobe._etcd_gateway import GatewayError, open_watch, post
from trioprobe.fleet._etcd import EtcdClient, EtcdError

# Far more than loopback's socket buffers hold, so the body's send blocks half-way.
BIG = 32_000_000


class _Server:
    """Reads a little of each request, then stalls (``reset=False``) or resets the connection."""

    def __init__(self, *, reset: bool) -> None:
        self.reset = reset
        self.received = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.received += len(await stream.receive_some(65536))
        if not self.reset:
            await trio.sleep_forever()
        # SO_LINGER 0: close with a RST, as a killed etcd's kernel does.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()


async def _leaves_no_generator(
    server: _Server, call: Callable[[str], Awaitable[object]]
) -> list[warnings.WarningMessage]:
    """Run ``call(url)`` against ``server`` and collect; the warnings raised meanwhile."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await call(url)
            gc.collect()
            await trio.lowlevel.checkpoint()  # Trio finalizes a collected generator in a task
        nursery.cancel_scope.cancel()
    assert server.received > 0  # the request was under way: headers and part of the body
    return [w for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize("reset", [False, True], ids=["cancelled", "reset"])
async def test_a_body_cut_off_mid_send_leaves_no_generator_behind(
    reset: bool, autojump_clock: trio.testing.MockClock
) -> None:
    server = _Server(reset=reset)
    outcome: list[str] = []

    async def call(url: str) -> None:
        async with httpx.AsyncClient() as client:
            with trio.move_on_after(5) as scope:
                try:
                    await post(client, url, "kv/put", {"value": "x" * BIG})
                except GatewayError:
                    outcome.append("error")
            if scope.cancelled_caught:
                outcome.append("cancelled")

    assert await _leaves_no_generator(server, call) == []
    assert outcome == ["cancelled" if not reset else "error"]


async def test_a_client_call_timing_out_mid_body_leaves_no_generator_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The fleet's own path: ``EtcdClient.put`` under its timeout (a vote while etcd stalls)."""
    server = _Server(reset=False)

    async def call(url: str) -> None:
        async with EtcdClient([url], timeout=2.0) as etcd:
            with pytest.raises(EtcdError, match=r"no answer within 2\.0s"):
                await etcd.put(b"k", b"x" * BIG)

    assert await _leaves_no_generator(server, call) == []


async def test_a_watch_on_a_server_that_resets_fails_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = _Server(reset=True)

    async def call(url: str) -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(GatewayError, match="cannot open a watch"):
                async with open_watch(client, url, b"p/", 1, open_within=5):
                    pass

    assert await _leaves_no_generator(server, call) == []
