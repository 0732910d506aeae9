"""The Prober over real loopback sockets against ``serve_health`` (real time, short).

Each test runs on both connection paths: the lean h11 one (no client given, plain http://)
and httpx (a caller's client).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from trioprobe.probing import open_prober, serve_health
from trioprobe.testing import start_health_endpoint


async def wait_for(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll: the status is a live view with no change notification (like the reference's)."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


@pytest.fixture(params=["lean", "httpx"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient | None]:
    if request.param == "lean":
        yield None
    else:
        async with httpx.AsyncClient(timeout=None) as given:
            yield given


async def test_prober_against_serve_health(client: httpx.AsyncClient | None) -> None:
    async with trio.open_nursery() as servers:
        url = await start_health_endpoint(servers)
        async with open_prober(client) as prober:
            # A generous timeout: on a loaded machine a 20 ms deadline would count as loss.
            status = prober.add_http("local", 0.02, [url], timeout=5.0)
            other = prober.add_http("local-2", 0.02, [url], timeout=5.0)
            await wait_for(lambda: status.total >= 10 and other.total >= 10)
            assert status.loss == 0
            assert status.health is True
            # Same host, same clock: the difference is only the estimate's error.
            assert abs(status.clock_diff) < 0.05
            assert 0 < status.srtt < 0.1
        assert status.stopped
        servers.cancel_scope.cancel()


async def test_outage_and_recovery(client: httpx.AsyncClient | None) -> None:
    async with open_prober(client) as prober:
        async with trio.open_nursery() as servers:
            url = await start_health_endpoint(servers)
            status = prober.add_http("p", 0.02, [url], timeout=5.0)
            await wait_for(lambda: status.health and status.total >= 3)
            servers.cancel_scope.cancel()
        loss = status.loss
        await wait_for(lambda: status.loss >= loss + 3)
        assert status.health is False
        assert isinstance(status.error, httpx.ConnectError)
        srtt = status.srtt
        assert srtt > 0  # survives the outage
        port = httpx.URL(url).port
        assert port is not None
        async with trio.open_nursery() as servers:
            await servers.start(
                lambda task_status: serve_health(port=port, task_status=task_status)
            )
            await wait_for(lambda: status.health)
            servers.cancel_scope.cancel()
