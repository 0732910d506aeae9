"""The latency histogram and the closed-loop benchmark."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trioprobe.metrics import Distribution
from trioprobe.zmqnet import RouterServer, benchmark
from trioprobe.zmqnet.latency import LatencyStats

from .test_client import FakeServer


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=300))
def test_latency_percentiles_within_relative_precision(values: list[int]) -> None:
    h = LatencyStats()
    assert isinstance(h.buckets, Distribution)  # the one histogram type, log-linear buckets
    for v in values:
        h.record(v)
    ordered = sorted(values)
    for q in (0.0, 0.5, 0.9, 0.99, 0.999, 1.0):
        exact = ordered[max(0, -(-int(q * 1e9) * len(values) // int(1e9)) - 1)]
        got = h.percentile(q)
        assert isinstance(got, int)
        assert abs(got - exact) <= max(1, exact) / 2**7 + 1, (q, exact, got)
    assert (h.minimum, h.maximum, h.samples, h.total) == (
        ordered[0],
        ordered[-1],
        len(values),
        sum(values),
    )


def test_log_linear_buckets_are_hdr_style() -> None:
    d = Distribution.log_linear(precision_bits=2, max_value=32)
    # Width 1 below 2**2, then 4 buckets per power of two, up to the first bound >= 32.
    assert d.lower_bounds == (
        -math.inf,
        *map(float, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14]),
        *map(float, [16, 20, 24, 28, 32, 40, 48, 56]),
    )
    scaled = Distribution.log_linear(precision_bits=2, unit=0.5, max_value=8)
    assert scaled.lower_bounds[1:6] == (0.0, 0.5, 1.0, 1.5, 2.0)
    with pytest.raises(ValueError, match="precision_bits"):
        Distribution.log_linear(precision_bits=0)


def test_latency_statistics_and_merge() -> None:
    a, b = LatencyStats(), LatencyStats()
    for v in (2, 4, 4, 4):
        a.record(v)
    for v in (5, 5, 7, 9):
        b.record(v)
    a.merge(b)
    assert a.samples == 8
    assert a.mean == 5.0
    assert a.variance == pytest.approx(32 / 7)  # sample variance, as the reference computes it
    assert (a.minimum, a.maximum) == (2, 9)
    # The 4th of 8 samples is the last 4: interpolation puts it at the top of the [4, 5) bucket.
    assert a.percentile(0.5) == 5
    assert a.percentile(0.0) == 2
    assert a.percentile(1.0) == 9
    assert a.buckets.count == 8
    assert LatencyStats().percentile(0.5) == 0
    with pytest.raises(ValueError, match="quantile"):
        a.percentile(1.5)


async def test_benchmark_under_mock_time_counts_replies_and_drops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One reply per 10 ms per client; the second client's server is silent and drops."""
    fast = FakeServer([0.01])
    result = await benchmark(
        "tcp://x:1",
        duration=1.0,
        clients=2,
        timeout=0.1,
        retries=2,
        transport_factory=fast.factory,
    )
    assert result.clients == 2
    assert result.duration == pytest.approx(1.0)
    # 2 clients x ~100 replies each (the last in-flight request is abandoned).
    assert 196 <= result.messages <= 200
    assert result.drops == 0
    lat = result.latency()
    assert lat["p50"] == pytest.approx(10_000_000, rel=0.01)
    assert lat["p99.9"] == pytest.approx(10_000_000, rel=0.01)
    assert result.throughput == pytest.approx(result.messages / 1.0)
    # The reference's figure divides by summed latency: with 2 clients it is half the wall rate.
    assert result.reference_throughput == pytest.approx(100, rel=0.01)

    silent = FakeServer([None])
    dropped = await benchmark(
        "tcp://x:1",
        duration=1.0,
        clients=1,
        timeout=0.1,
        retries=2,
        transport_factory=silent.factory,
    )
    assert dropped.messages == 0
    # Each drop costs 2 attempts x 0.1 s; the fifth would end exactly at the deadline, which wins.
    assert dropped.drops == 4


async def test_benchmark_against_real_server_writes_json_line(tmp_path: Path) -> None:
    out = tmp_path / "results.json"

    async def echo(request: bytes) -> bytes:
        return request

    server = RouterServer("tcp://127.0.0.1:0", echo, workers=4)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server.run)
            result = await benchmark(
                addr,
                duration=0.5,
                clients=3,
                timeout=2,
                message_size=64,
                identity="bench",
                results=out,
                extra={"run": "test"},
            )
            nursery.cancel_scope.cancel()
    assert result.messages > 10
    assert result.drops == 0
    assert server.metrics.accesses >= result.messages
    assert server.metrics.n_clients == 3
    (line,) = out.read_text().splitlines()
    data = json.loads(line)
    assert data["messages"] == result.messages
    assert data["name"] == "bench"
    assert data["run"] == "test"
    assert data["n_clients"] == 3
    dist = data["latency distribution"]
    assert dist["samples"] == result.messages
    assert 0 < dist["minimum"] <= dist["p50"] <= dist["p99"] <= dist["maximum"]
    assert data["throughput (msg/sec)"] == pytest.approx(
        result.messages / (dist["total"] / 1e9), rel=1e-4
    )


async def test_benchmark_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="duration"):
        await benchmark("tcp://x:1", duration=0)
    with pytest.raises(ValueError, match="clients"):
        await benchmark("tcp://x:1", duration=1, clients=0)


async def test_benchmark_checks_results_file_before_the_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A results path that cannot be appended to fails at once, not after `duration`."""
    server = FakeServer([0.01])
    missing = tmp_path / "missing" / "results.json"
    start = trio.current_time()
    with pytest.raises(FileNotFoundError) as info:
        await benchmark("tcp://x:1", duration=60, results=missing, transport_factory=server.factory)
    assert info.value.filename == str(missing)
    assert trio.current_time() == start
    assert server.transports == []  # no client ever connected
