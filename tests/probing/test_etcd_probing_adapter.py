"""The ``etcd_probing`` probe type: config options, targets, and the ProbeResults it sends."""

from __future__ import annotations

import logging

import httpx
import pytest
import trio
import trio.testing

from trioprobe._ticks import spread_offset
from trioprobe.alerting import DOWN, UP, AlertRule, Health
from trioprobe.config import ConfigError, ProbeSpec, parse_config
from trioprobe.probes import probe_types
from trioprobe.probes.etcd_probing import (
    EtcdProbingProbe,
    Options,
    endpoint_for,
    make_probe,
    probe_result,
)
from trioprobe.probing import ProbeRecord, ProbeTimeout, open_prober
from trioprobe.probing.health import format_rfc3339_nano
from trioprobe.results import ProbeResult


def test_registered_and_configurable() -> None:
    module = probe_types.load("etcd_probing")
    assert module.make_probe is make_probe
    config = parse_config(
        {
            "probe": [
                {
                    "name": "peers",
                    "type": "etcd_probing",
                    "targets": ["http://127.0.0.1:2380"],
                    "interval": 4.0,
                    "timeout": 2.0,
                    "path": "/health",
                }
            ]
        }
    )
    spec, options = config.probes[0]
    assert options == Options(path="/health")
    probe = make_probe(spec, options, lambda: spec.targets)
    assert (probe.interval, probe.timeout) == (4.0, 2.0)


def test_bad_path_is_a_config_error() -> None:
    # The validator's message names the bad value; config.py currently reports it as
    # "invalid value" at the probe's key path (cattrs' default), so only the path is checked.
    with pytest.raises(ValueError, match="path must start with '/': 'health'"):
        Options(path="health")
    with pytest.raises(ConfigError, match=r"probe\[0\]"):
        parse_config(
            {
                "probe": [
                    {"name": "p", "type": "etcd_probing", "targets": ["http://a"], "path": "health"}
                ]
            }
        )


@pytest.mark.parametrize(
    ("target", "url"),
    [
        ("http://10.0.0.2:2380", "http://10.0.0.2:2380/raft/probing"),
        ("http://10.0.0.2:2380/", "http://10.0.0.2:2380/raft/probing"),
        ("http://10.0.0.2:2380/raft/probing", "http://10.0.0.2:2380/raft/probing"),
        ("https://peer/custom", "https://peer/custom"),
    ],
)
def test_endpoint_for(target: str, url: str) -> None:
    assert endpoint_for(target, "/raft/probing") == url


async def test_one_id_per_target_with_srtt_and_clock_diff_gauges(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    paths: list[str] = []

    async def peer(request: httpx.Request) -> httpx.Response:
        paths.append(f"{request.url.host}{request.url.path}")
        await trio.sleep(0.004)
        if request.url.host == "b":
            return httpx.Response(500)
        return httpx.Response(200, json={"OK": True, "Now": format_rfc3339_nano(0)})

    targets = ["http://a:2380", "http://b:2380/raft/probing", "nonsense"]
    send, receive = trio.open_memory_channel[ProbeResult](100)
    async with httpx.AsyncClient(transport=httpx.MockTransport(peer)) as client:
        probe = EtcdProbingProbe(
            Options(), lambda: targets, interval=1.0, timeout=0.5, client=client
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            await trio.sleep(2.5)
            targets = ["http://a:2380"]  # b and the bad one go away
            await trio.sleep(3.0)
            nursery.cancel_scope.cancel()
    send.close()
    got = [r async for r in receive]
    by_target: dict[str, list[ProbeResult]] = {}
    for r in got:
        by_target.setdefault(r.target, []).append(r)
    assert set(by_target) == {"http://a:2380", "http://b:2380/raft/probing"}
    a, b = by_target["http://a:2380"], by_target["http://b:2380/raft/probing"]
    assert len(a) == 6  # first at 1/3 s (phases spread over the 3 new targets), then every 1 s
    assert all(r.success for r in a)
    assert a[0].latency == pytest.approx(0.004)
    assert a[-1].gauges["srtt"] == pytest.approx(0.004)
    # The remote clock says 1970: the local clock is far ahead, so clock_diff is large, positive.
    clock_diff = a[-1].gauges["clock_diff"]
    assert isinstance(clock_diff, float)
    assert clock_diff > 1e9
    # b was probed until it left the target list (the list is re-read every interval).
    assert 1 <= len(b) <= 3
    assert not any(r.success for r in b)
    assert "500" in (b[0].error or "")
    assert set(paths) == {"a/raft/probing", "b/raft/probing"}
    skipped = [r for r in caplog.records if "skipping target 'nonsense'" in r.getMessage()]
    assert len(skipped) == 1
    assert skipped[0].levelno == logging.WARNING


async def test_timeout_comes_from_the_spec(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    spec = ProbeSpec(
        name="p", type="etcd_probing", targets=("http://a",), interval=1.0, timeout=0.2
    )
    send, receive = trio.open_memory_channel[ProbeResult](10)
    async with httpx.AsyncClient(transport=httpx.MockTransport(silent)) as client:
        probe = make_probe(spec, Options(), lambda: spec.targets)
        probe._client = client
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            await trio.sleep(1.0)
            with trio.fail_after(0.21):
                result = await receive.receive()
            nursery.cancel_scope.cancel()
    assert result.timeout
    assert not result.success


async def test_targets_added_together_get_spread_phases(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: dict[str, float] = {}

    async def peer(request: httpx.Request) -> httpx.Response:
        starts.setdefault(request.url.host, trio.current_time())
        return httpx.Response(200, json={"OK": True, "Now": format_rfc3339_nano(0)})

    targets = [f"http://h{i}:2380" for i in range(4)]
    send, _receive = trio.open_memory_channel[ProbeResult](100)
    async with httpx.AsyncClient(transport=httpx.MockTransport(peer)) as client:
        probe = EtcdProbingProbe(
            Options(), lambda: targets, interval=2.0, timeout=1.0, client=client
        )
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            await nursery.start(probe.run, send)
            await trio.sleep(2.1)
            nursery.cancel_scope.cancel()
    # Each target's first probe comes at its own stable offset within the first interval.
    expected = [spread_offset(t, 2.0) for t in targets]
    assert [starts[f"h{i}"] - t0 for i in range(4)] == pytest.approx(expected)
    assert len({round(x, 6) for x in expected}) == 4


def test_probe_result_from_records() -> None:
    """The adapter's half of the Prober's records: what the stats keeper and alerting read."""
    url = "http://a:2380/raft/probing"
    ok = probe_result(ProbeRecord("a", url, True, 0.02, 0.03, 0.5, None, 0.01))
    assert (ok.target, ok.success, ok.latency, ok.timeout, ok.error) == (
        "a",
        True,
        0.02,
        False,
        None,
    )
    assert dict(ok.gauges) == {"srtt": 0.03, "clock_diff": 0.5}
    assert ok.start_lateness == 0.01
    late = probe_result(ProbeRecord("a", url, False, 0.0, 0.03, 0.5, ProbeTimeout(url, 1.0)))
    assert (late.success, late.timeout) == (False, True)
    assert late.error == f"{url}: no reply within 1 s"
    assert dict(late.gauges) == {"srtt": 0.03, "clock_diff": 0.5}
    refused = probe_result(
        ProbeRecord("a", url, False, 0.0, 0.0, 0.0, httpx.ConnectError("connection refused"))
    )
    assert not refused.timeout
    assert refused.error == f"{url}: ConnectError: connection refused"


async def test_health_tracks_a_probers_records(autojump_clock: trio.testing.MockClock) -> None:
    """``Health.track`` takes the standalone Prober's records channel directly."""
    up = True

    async def peer(request: httpx.Request) -> httpx.Response:
        if not up:
            return httpx.Response(503)
        return httpx.Response(200, json={"OK": True, "Now": format_rfc3339_nano(0)})

    health = Health(default=AlertRule(failure_threshold=2, success_threshold=1))
    send, receive = trio.open_memory_channel[ProbeRecord | ProbeResult](10)
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(transport=httpx.MockTransport(peer)) as client,
    ):
        await nursery.start(health.track, "peers", receive)
        async with send, open_prober(client, records=send) as prober:
            prober.add_http("peer-2", 1.0, ["http://peer-2/raft/probing"])
            await health.wait_until("peer-2", UP)
            up = False
            status = await health.wait_until("peer-2", DOWN)
    assert status.probe == "peers"
    assert status.error is not None
    assert "503" in status.error
