"""With no file descriptor left, building a target's client fails that target, not the run."""

from __future__ import annotations

import errno

import httpx
import trio

from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.results import ProbeResult


async def test_a_client_that_cannot_be_built_is_the_targets_failure() -> None:
    def no_descriptors() -> httpx.AsyncClient:
        raise OSError(errno.EMFILE, "Too many open files")

    url = "http://127.0.0.1:9/"
    probe = HTTPProbe(
        Options(transport="httpx"),
        lambda: [url],
        interval=1.0,
        timeout=1.0,
        client_factory=no_descriptors,
    )
    send, receive = trio.open_memory_channel[ProbeResult](10)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            first, second = await receive.receive(), await receive.receive()
            nursery.cancel_scope.cancel()
    for result in (first, second):  # the probe goes on: a second interval, a second failure
        assert not result.success
        assert result.error == "client: OSError: [Errno 24] Too many open files"
