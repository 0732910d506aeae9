"""The Prober against a real etcd peer listener's ``/raft/probing`` (real time, < 30 s)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from trioprobe.probing import open_prober

from .services import Etcd

pytestmark = pytest.mark.real

INTERVAL = 0.1


async def wait_for(predicate: Callable[[], bool], limit: float) -> None:
    """Poll the live status (it has no change notification, like the reference's)."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_probe_real_etcd_through_an_outage(etcd: Etcd) -> None:
    url = f"{etcd.peer_url}/raft/probing"
    async with open_prober() as prober:
        # The timeout is generous so that a loaded CI machine is not mistaken for loss.
        status = prober.add_http("n1", INTERVAL, [url], timeout=2.0)
        await wait_for(lambda: status.total >= 10, 5.0)
        assert status.loss == 0, status.error
        assert status.health is True
        # Same machine, same clock: what is left is the estimate's own error.
        assert abs(status.clock_diff) < 0.050, status
        assert 0 < status.srtt < 0.100, status
        total = status.total
        await trio.sleep(5 * INTERVAL)
        assert status.total > total

        # etcd's stop/start block (they wait for the process): keep them off the event loop.
        await trio.to_thread.run_sync(etcd.stop)
        loss = status.loss
        await wait_for(lambda: status.loss >= loss + 3, 5.0)
        assert status.health is False
        assert status.error is not None
        srtt = status.srtt
        assert srtt > 0  # survives failures

        await trio.to_thread.run_sync(etcd.start)
        await wait_for(lambda: status.health, 10.0)
        loss = status.loss
        await wait_for(lambda: status.total >= total + 20, 10.0)
        assert status.loss == loss
        assert status.health is True
        assert abs(status.clock_diff) < 0.050, status
