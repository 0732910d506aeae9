"""etcd's gateway when etcd goes away in the middle of a request body.

A soak run of tests/real/test_fleet_etcd.py failed once on Trio's ResourceWarning "Async generator
'httpx._content.ByteStream.__aiter__' was garbage collected before it had been exhausted" after
etcd restarted: httpcore iterates httpx's request body (an async generator) without closing it,
so a body whose send fails (reset: httpcore swallows the write error to read a reply) or is
cancelled (a deadline) leaves the generator suspended. A real TCP server on loopback that stops
reading makes the send block deterministically; the clock is Trio's MockClock.
"""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.lowlevel

from trioprobe._etcd_gateway import GatewayError, open_watch, post
from trioprobe.fleet._etcd import EtcdClient, EtcdError

from ..body_cutoff import BIG, CuttingServer, leaves_no_generator


@pytest.mark.parametrize("reset", [False, True], ids=["cancelled", "reset"])
async def test_a_body_cut_off_mid_sendleaves_no_generator_behind(
    reset: bool, autojump_clock: trio.testing.MockClock
) -> None:
    server = CuttingServer(reset=reset)
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

    assert await leaves_no_generator(server, call) == []
    assert outcome == ["cancelled" if not reset else "error"]


async def test_a_client_call_timing_out_mid_bodyleaves_no_generator_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The fleet's own path: ``EtcdClient.put`` under its timeout (a vote while etcd stalls)."""
    server = CuttingServer(reset=False)

    async def call(url: str) -> None:
        async with EtcdClient([url], timeout=2.0) as etcd:
            with pytest.raises(EtcdError, match=r"no answer within 2\.0s"):
                await etcd.put(b"k", b"x" * BIG)

    assert await leaves_no_generator(server, call) == []


async def test_a_watch_on_a_server_that_resets_fails_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = CuttingServer(reset=True)

    async def call(url: str) -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(GatewayError, match="cannot open a watch"):
                async with open_watch(client, url, b"p/", 1, open_within=5):
                    pass

    assert await leaves_no_generator(server, call) == []
