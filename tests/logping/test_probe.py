"""The ``logping`` probe adapter: ProbeResults with counter deltas, targets as log specs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from trioprobe.config import ConfigError, ProbeSpec, parse_config
from trioprobe.logping import LogUnavailableError, open_log
from trioprobe.logping import pinger as pinger_module
from trioprobe.logping.encoding import encode_ping
from trioprobe.logping.logs import LogClients
from trioprobe.metrics import Distribution
from trioprobe.probes import logping as logping_probe
from trioprobe.probes.logping import LogPingProbe, Options, make_probe
from trioprobe.results import ProbeResult


def test_options_validate_the_log() -> None:
    assert Options().log == "memory"
    assert Options(log="etcd:http://127.0.0.1:2379").log.startswith("etcd:")
    with pytest.raises(ValueError, match="is not one of"):
        Options(log="redis:whatever")
    with pytest.raises(ValueError, match="ping_interval"):
        Options(ping_interval=0)


async def collect(probe: LogPingProbe, seconds: float) -> list[ProbeResult]:
    send, recv = trio.open_memory_channel[ProbeResult](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run, send)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    send.close()
    return [r async for r in recv]


async def test_memory_log_results(autojump_clock: trio.abc.Clock) -> None:
    spec = ProbeSpec(name="lp", type="logping", interval=1.0, timeout=0.5)
    probe = make_probe(spec, Options(), lambda: ["memory"])
    results = await collect(probe, 5.5)
    assert len(results) == 5
    assert all(r.target == "memory" and r.success for r in results)
    assert all(r.latency == 0.0 for r in results)  # autojump: no time passes in memory
    assert [r.gauges["last_applied"] for r in results] == [1, 2, 3, 4, 5]
    # The data-loss restarts are exported beside restarts (deltas, all 0 here).
    assert all(r.extras["rewinds"] == r.extras["stalls"] == 0 for r in results)
    # Counter extras are deltas, so the keeper's sum is the pinger's total.
    assert [r.extras["appends_succeeded"] for r in results] == [1, 1, 1, 1, 1]
    dist = results[0].extras["append_latency"]
    assert isinstance(dist, Distribution)
    total = sum(
        d.count for r in results if isinstance(d := r.extras["append_latency"], Distribution)
    )
    assert total == 5


async def test_defaults_to_options_log_and_follows_target_changes(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    targets: list[str] = []
    spec = ProbeSpec(name="lp", type="logping", interval=1.0, timeout=0.5)
    probe = make_probe(spec, Options(ping_interval=0.5), lambda: targets)
    send, recv = trio.open_memory_channel[ProbeResult](1000)
    file_target = f"file:{tmp_path / 'log'}"
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run, send)
        await trio.sleep(1.2)
        assert set(probe.pingers) == {"memory"}  # no targets: Options.log
        targets.append(file_target)
        await trio.sleep(1.0)
        assert set(probe.pingers) == {file_target}
        nursery.cancel_scope.cancel()
    send.close()
    seen = {r.target async for r in recv}
    assert "memory" in seen
    assert (tmp_path / "log").exists()


async def test_dropped_results_keep_their_deltas_and_warn_rarely(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    spec = ProbeSpec(name="lp", type="logping", interval=1.0, timeout=0.5)
    probe = make_probe(spec, Options(buffer=1), lambda: ["memory"])
    # Nobody reads until t=25.5: the forwarder holds result 1, the buffer result 2, and the
    # results of pings 3..25 are dropped.
    send, recv = trio.open_memory_channel[ProbeResult](0)
    caplog.set_level(logging.WARNING, logger="trioprobe.probes.logping")
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run, send)
        await trio.sleep(25.5)
        metrics = probe.pingers["memory"].metrics
        results = [await recv.receive() for _ in range(3)]  # 1, 2, and ping 26's
        nursery.cancel_scope.cancel()
    assert [r.gauges["last_applied"] for r in results] == [1, 2, 26]
    assert metrics.appends_succeeded == 26
    # The dropped results' changes ride on the next result sent, so the sums are the totals.
    succeeded = [r.extras["appends_succeeded"] for r in results]
    assert succeeded == [1, 1, 24]
    assert sum(n for n in succeeded if isinstance(n, int)) == metrics.appends_succeeded
    appended = [r.extras["append_latency"] for r in results]
    assert [d.count for d in appended if isinstance(d, Distribution)] == [1, 1, 24]
    assert [r.extras["results_dropped"] for r in results] == [0, 0, 23]
    # Drops from t=3 to t=25: one warning per 10 s (t=3, 13, 23), none holding a whole result.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("ProbeResult" not in r.getMessage() for r in warnings)
    assert [r.getMessage().count(" 21 results dropped") for r in warnings] == [0, 0, 1]


async def test_replay_failures_are_failed_results(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log is "down" for its first three replay attempts (t=0, 1, 2), so no ping can start
    # until t=3; the probe must still report the target, as failures.
    @asynccontextmanager
    async def flaky_open_log(spec: str, **kwargs: Any) -> AsyncIterator[LogClients]:
        async with open_log(spec, **kwargs) as log:
            failures = 3

            async def next_index() -> int:
                nonlocal failures
                if failures:
                    failures -= 1
                    raise LogUnavailableError("etcd is down")
                return await log.next_index()

            yield attrs.evolve(log, next_index=next_index)

    monkeypatch.setattr(logping_probe, "open_log", flaky_open_log)
    spec = ProbeSpec(name="lp", type="logping", interval=1.0, timeout=0.5)
    probe = make_probe(spec, Options(replay_retry_interval=1.0), lambda: ["memory"])
    results = await collect(probe, 6.5)  # pings at t=4, 5, 6
    assert [r.success for r in results] == [False] * 3 + [True] * 3
    assert all(
        r.error == "getting the replay position failed: LogUnavailableError('etcd is down')"
        and not r.timeout
        for r in results[:3]
    )
    # Each failure carries its own replay_errors delta, so the keeper's sum is the total.
    assert [r.extras["replay_errors"] for r in results] == [1, 1, 1, 0, 0, 0]


async def test_readded_target_keeps_its_new_pinger(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Appends that cannot be cancelled for 3 s (like one in a worker thread), so a removed
    # target's task outlives its removal and the target's re-adding.
    @asynccontextmanager
    async def slow_open_log(spec: str, **kwargs: Any) -> AsyncIterator[LogClients]:
        async with open_log(spec, **kwargs) as log:
            memory = log.appender

            class SlowAppender:
                async def append(self, data: bytes) -> int:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(3)
                    return await memory.append(data)

            yield attrs.evolve(log, appender=SlowAppender())

    monkeypatch.setattr(logping_probe, "open_log", slow_open_log)
    targets = ["memory"]
    spec = ProbeSpec(name="lp", type="logping", interval=1.0, timeout=0.5)
    probe = make_probe(spec, Options(ping_interval=10.0), lambda: targets)
    send, _recv = trio.open_memory_channel[ProbeResult](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run, send)
        await trio.sleep(10.5)  # t=10: the first ping's append starts, busy until t=13
        old = probe.pingers["memory"]
        # Removed at t=11 (an empty list would mean Options.log, which is "memory" too).
        targets[:] = ["nonsense"]
        await trio.sleep(1.0)
        assert probe.pingers["memory"] is old  # still winding down
        targets[:] = ["memory"]  # re-added at t=12
        await trio.sleep(1.0)
        new = probe.pingers["memory"]
        assert new is not old
        await trio.sleep(2.0)  # t=13: the old task has ended
        assert probe.pingers.get("memory") is new
        nursery.cancel_scope.cancel()
    assert probe.pingers == {}


async def test_bad_target_is_reported_not_fatal(autojump_clock: trio.abc.Clock) -> None:
    spec = ProbeSpec(name="lp", type="logping", interval=1.0, timeout=0.5)
    probe = make_probe(spec, Options(), lambda: ["nonsense", "memory"])
    results = await collect(probe, 2.5)
    bad = [r for r in results if r.target == "nonsense"]
    assert len(bad) == 1
    assert not bad[0].success
    assert "is not one of" in (bad[0].error or "")
    assert any(r.target == "memory" and r.success for r in results)


async def test_aborted_ping_is_a_timeout(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every ping is written under another writer id, so none is ever recognised.
    monkeypatch.setattr(pinger_module, "encode_ping", lambda _, seq: encode_ping(b"\x02" * 16, seq))
    spec = ProbeSpec(name="lp", type="logping", interval=1.0, timeout=0.5)
    probe = make_probe(spec, Options(), lambda: ["memory"])
    send, recv = trio.open_memory_channel[ProbeResult](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run, send)
        await trio.sleep(3.5)
        nursery.cancel_scope.cancel()
    send.close()
    results = [r async for r in recv]
    assert len(results) == 2  # pings 1 and 2 aborted; ping 3 still in flight
    assert all(not r.success and r.timeout for r in results)
    assert "aborted" in (results[0].error or "")


def test_config_structures_logping_options() -> None:
    config = parse_config(
        {
            "probe": [
                {
                    "name": "lp",
                    "type": "logping",
                    "targets": ["etcd:http://127.0.0.1:2379"],
                    "interval": 0.5,
                    "pings_until_disconnect": 10,
                    "prefix": "x/",
                }
            ]
        }
    )
    _spec, options = config.probes[0]
    assert isinstance(options, Options)
    assert (options.pings_until_disconnect, options.prefix) == (10, "x/")
    # A bad log spec is a config error on that probe (cattrs reduces the message to "invalid
    # value"; Options itself names the problem, see test_options_validate_the_log).
    with pytest.raises(ConfigError, match=r"probe\[0\]"):
        parse_config(
            {"probe": [{"name": "lp", "type": "logping", "targets": ["m"], "log": "redis:x"}]}
        )
