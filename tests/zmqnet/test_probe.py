"""The ``zmq`` probe adapter, against real servers in real time (short intervals)."""

from __future__ import annotations

import pytest
import trio
import zmq

from trioprobe.config import ProbeSpec
from trioprobe.probes import probe_types
from trioprobe.probes.zmq import Options, make_probe
from trioprobe.results import ProbeResult
from trioprobe.zmqnet import RouterServer, Socket


async def collect(
    options: Options, targets: list[str], per_target: int, *, probe_timeout: float = 0.3
) -> list[ProbeResult]:
    """Run the probe until every target has produced ``per_target`` results."""
    spec = ProbeSpec(name="z", type="zmq", interval=0.05, timeout=probe_timeout)
    probe = make_probe(spec, options, lambda: targets)
    send, receive = trio.open_memory_channel[ProbeResult](100)
    got: list[ProbeResult] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            async for result in receive:
                got.append(result)
                if all(sum(r.target == t for r in got) >= per_target for t in targets):
                    break
            nursery.cancel_scope.cancel()
    return got


async def test_live_server_succeeds_and_silent_one_times_out() -> None:
    server = RouterServer("tcp://127.0.0.1:0")
    async with Socket(zmq.ROUTER) as silent:
        silent_addr = silent.bind("tcp://127.0.0.1:0")
        async with trio.open_nursery() as nursery:
            live = await nursery.start(server.run)
            results = await collect(Options(reply_regex=r"^reply msg #\d+"), [live, silent_addr], 2)
            nursery.cancel_scope.cancel()
    by_target = {r.target: r for r in results}
    assert set(by_target) == {live, silent_addr}
    assert all(r.success and 0 < r.latency < 0.3 for r in results if r.target == live)
    dead = [r for r in results if r.target == silent_addr]
    assert dead
    assert all(not r.success and r.timeout for r in dead)
    assert server.metrics.accesses >= len(results) - len(dead)


async def test_reply_regex_mismatch_is_a_failure() -> None:
    server = RouterServer("tcp://127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(server.run)
        results = await collect(Options(reply_regex="^pong$"), [addr], 2)
        nursery.cancel_scope.cancel()
    assert all(not r.success and not r.timeout for r in results)
    assert "did not match /^pong$/" in (results[0].error or "")


def test_options_validate_and_type_is_registered() -> None:
    assert probe_types.load("zmq").Options is Options
    with pytest.raises(ValueError, match="reply_regex"):
        Options(reply_regex="(")
    with pytest.raises(ValueError, match="retries"):
        Options(retries=0)
