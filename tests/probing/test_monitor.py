"""The monitor helper (etcd's probing-status monitor), under ``autojump_clock``."""

from __future__ import annotations

import itertools
import logging
import math

import httpx
import pytest
import trio
import trio.testing

from trioprobe.metrics import Distribution
from trioprobe.probing import monitor, open_prober, rtt_histogram
from trioprobe.probing.health import format_rfc3339_nano
from trioprobe.probing.monitor import RTT_BUCKETS

URL = "http://peer/raft/probing"
LOCAL_NOW = 1_700_000_000.0


class Peer:
    def __init__(self) -> None:
        self.up = True
        self.offset = 0.0  # remote clock minus local clock

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await trio.sleep(0.002)
        if not self.up:
            raise httpx.ConnectError("refused", request=request)
        now = format_rfc3339_nano(round((LOCAL_NOW + self.offset) * 1e9))
        return httpx.Response(200, json={"OK": True, "Now": now})


class Sink:
    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []

    def add_sample(self, value: float, /) -> None:
        self.samples.append((trio.current_time(), value))


def test_rtt_buckets_are_etcds() -> None:
    assert len(RTT_BUCKETS) == 16
    assert RTT_BUCKETS[0] == pytest.approx(0.0001)
    assert RTT_BUCKETS[-1] == pytest.approx(3.2768)
    assert all(b == pytest.approx(2 * a) for a, b in itertools.pairwise(RTT_BUCKETS))


def test_rtt_histogram_is_a_distribution_with_etcds_buckets() -> None:
    h = rtt_histogram()
    assert isinstance(h, Distribution)  # the one histogram type
    for x in [0.00005, 0.0001, 0.00011, 0.002, 10.0]:
        h.add_sample(x)
    assert h.count == 5
    assert h.sum == pytest.approx(10.00226)
    assert h.lower_bounds == (-math.inf, 0.0, *RTT_BUCKETS)
    assert h.bucket_counts[1] == 1  # [0, 0.1 ms)
    assert h.bucket_counts[2] == 2  # [0.1 ms, 0.2 ms): a sample on a bound counts above it
    assert h.bucket_counts[-1] == 1  # [3.2768 s, inf)
    assert sum(h.bucket_counts) == 5


async def test_check_schedule_5s_then_30s_healthy_5s_unhealthy(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    peer, sink = Peer(), Sink()
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(peer)) as client,
        open_prober(client, wall_clock=lambda: LOCAL_NOW) as prober,
        trio.open_nursery() as nursery,
    ):
        t0 = trio.current_time()
        status = prober.add_http("peer-1", 1.0, [URL])
        await nursery.start(
            lambda task_status: monitor(status, histogram=sink, task_status=task_status)
        )
        await trio.sleep(66.0)
        # healthy: checks at 5, 35, 65
        assert [t - t0 for t, _ in sink.samples] == pytest.approx([5.0, 35.0, 65.0])
        assert all(v == pytest.approx(0.002) for _, v in sink.samples)
        assert caplog.records == []
        peer.up = False
        await trio.sleep(30.0)  # check at 95 sees unhealthy, then 100, 105...
        times = [t - t0 for t, _ in sink.samples]
        assert times[3:] == pytest.approx([95.0])
        await trio.sleep(10.5)
        times = [t - t0 for t, _ in sink.samples]
        assert times[3:] == pytest.approx([95.0, 100.0, 105.0])
        warnings = [r for r in caplog.records if "unhealthy" in r.getMessage()]
        assert len(warnings) == 3
        assert warnings[0].levelno == logging.WARNING
        assert "peer=peer-1" in warnings[0].getMessage()
        assert "refused" in warnings[0].getMessage()
        # SRTT is still recorded while unhealthy (it survives failures), as etcd does.
        assert sink.samples[-1][1] == pytest.approx(0.002)
        peer.up = True
        await trio.sleep(5.0)  # the check at 110 sees it healthy again -> next one at 140
        assert [t - t0 for t, _ in sink.samples][-1] == pytest.approx(110.0)
        await trio.sleep(28.0)
        assert [t - t0 for t, _ in sink.samples][-1] == pytest.approx(110.0)
        await trio.sleep(1.0)
        assert [t - t0 for t, _ in sink.samples][-1] == pytest.approx(140.0)
        assert len([r for r in caplog.records if "unhealthy" in r.getMessage()]) == 3
        prober.remove("peer-1")
        # The monitor ends on StopNotify, so the nursery can close.


@pytest.mark.parametrize(("offset", "warned"), [(-1.5, True), (1.5, True), (0.5, False)])
async def test_clock_drift_warned_in_both_directions(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    offset: float,
    warned: bool,
) -> None:
    peer = Peer()
    peer.offset = offset
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(peer)) as client,
        open_prober(client, wall_clock=lambda: LOCAL_NOW) as prober,
    ):
        status = prober.add_http("p", 1.0, [URL])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: monitor(status, name="peer-x"))
            await trio.sleep(5.5)
            prober.remove("p")
    drift = [r.getMessage() for r in caplog.records if "clock drift" in r.getMessage()]
    assert bool(drift) is warned
    if warned:
        assert "peer=peer-x" in drift[0]
        assert f"clock_diff={-offset - 0.001:+.6f}s" in drift[0]


async def test_monitor_returns_when_the_prober_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer()
    async with httpx.AsyncClient(transport=httpx.MockTransport(peer)) as client:
        async with trio.open_nursery() as nursery:
            async with open_prober(client) as prober:
                status = prober.add_http("p", 1.0, [URL])
                nursery.start_soon(monitor, status)
                await trio.sleep(1.0)
            end = trio.current_time()
        assert trio.current_time() == end  # returned at once, not at its next check


async def test_monitor_records_into_a_metrics_distribution(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trioprobe.metrics import Distribution

    dist = Distribution.exponential(base=2.0, scale=0.0001, count=16)
    peer = Peer()
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(peer)) as client,
        open_prober(client, wall_clock=lambda: LOCAL_NOW) as prober,
    ):
        status = prober.add_http("p", 1.0, [URL])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: monitor(status, histogram=dist))
            await trio.sleep(35.5)
            prober.remove("p")
    assert dist.count == 2  # checks at 5 s and 35 s
    assert dist.sum == pytest.approx(0.004)
