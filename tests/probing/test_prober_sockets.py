"""The Prober over real loopback sockets against ``serve_health`` (real time, short).

Each test runs on both connection paths: the lean h11 one (no client given, plain http://)
and httpx (a caller's client).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from trioprobe.probing import ProbeRecord, open_prober, serve_health
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
    """Real sockets, so real (and load-dependent) times: every check below is one that a busy
    machine cannot break. SRTT is an average of the RTTs, so after each probe it lies between
    the smallest and the largest RTT so far. The clock difference of one host with itself is
    only the estimate's error: local - remote = clock_diff + srtt/2 is at least 0 (the remote
    stamped its Now before we read ours) and at most the time the probes ran (a Now in the
    wrong unit or with the wrong sign is off by years)."""
    records: list[ProbeRecord] = []
    send, receive = trio.open_memory_channel[ProbeRecord](1000)

    async with trio.open_nursery() as servers:
        url = await start_health_endpoint(servers)
        opened = trio.current_time()
        async with open_prober(client, records=send) as prober:
            # A generous timeout: on a loaded machine a 20 ms deadline would count as loss.
            status = prober.add_http("local", 0.02, [url], timeout=5.0)
            other = prober.add_http("local-2", 0.02, [url], timeout=5.0)
            await wait_for(lambda: status.total >= 10 and other.total >= 10)
            assert status.loss == 0
            assert status.health is True
        ran = trio.current_time() - opened
        assert status.stopped
        servers.cancel_scope.cancel()
    send.close()
    records = [r async for r in receive if r.probe_id == "local"]
    assert len(records) >= 10
    assert all(r.success for r in records)
    eps = 1e-3  # two clock reads and the reply's rounding of Now
    for i, record in enumerate(records):
        rtts = [r.rtt for r in records[: i + 1]]
        assert 0 < min(rtts) <= record.srtt <= max(rtts)
        assert -eps <= record.clock_diff + record.srtt / 2 <= ran + eps
    assert (records[-1].srtt, records[-1].clock_diff) == (status.srtt, status.clock_diff)


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
