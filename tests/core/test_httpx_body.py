"""Every httpx POST with a body (etcd's gateway, InfluxDB writes, webhooks) sends it as a plain
iterator, so a send cut off mid-body leaves no async generator for Trio to warn about."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
import trio

from trioprobe._httpx_body import build_request
from trioprobe.alerting.queued import DeliveryError, QueuedNotifier

from ..body_cutoff import BIG, CuttingServer, leaves_no_generator


@pytest.mark.parametrize("reset", [False, True], ids=["cancelled", "reset"])
async def test_a_request_cut_off_mid_body_leaves_no_generator_behind(
    reset: bool, autojump_clock: trio.testing.MockClock
) -> None:
    async def call(url: str) -> None:
        async with httpx.AsyncClient() as client:
            with trio.move_on_after(5):
                request = build_request(client, "POST", f"{url}/write", content=b"x" * BIG)
                with pytest.raises(httpx.HTTPError) if reset else contextlib.nullcontext():
                    await client.send(request)

    assert await leaves_no_generator(CuttingServer(reset=reset), call) == []


async def test_the_body_is_sent_whole_with_its_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        request = build_request(
            client, "POST", "http://influx/write", content=b"m v=1", params={"db": "d"}
        )
        assert (await client.send(request)).status_code == 204
    assert seen[0].content == b"m v=1"
    assert seen[0].headers["content-length"] == "5"
    assert seen[0].url.params["db"] == "d"


async def test_a_webhook_whose_receiver_resets_mid_body_fails_cleanly(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The webhook sender used httpx's async-generator body through client.stream().
    notifier = QueuedNotifier(
        "hook", str(tmp_path), default_dir="", timeout=5.0, drain_timeout=1.0, transport=None
    )

    async def call(url: str) -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(DeliveryError):
                await notifier.post(client, url, b"x" * BIG, {})

    assert await leaves_no_generator(CuttingServer(reset=True), call) == []
