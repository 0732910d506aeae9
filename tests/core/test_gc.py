"""The garbage collector's governor (trioprobe._gc) and the connect path without cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from trioprobe._gc import GcGovernor
from trioprobe._tcp import open_tcp_stream
from trioprobe.config import parse_config
from trioprobe.metrics import Float, Int
from trioprobe.runner import Runner


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def thawed() -> Iterator[None]:
    # Each test starts and ends with nothing frozen, whatever the one before it did.
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_survivors_of_an_older_collection_are_frozen_and_thawed_at_the_end(
    thawed: None,
) -> None:
    governor = GcGovernor()
    async with trio.open_nursery() as nursery:
        await nursery.start(governor.run)
        at_start = gc.get_freeze_count()
        assert at_start > 0  # the start-up heap, before any probe
        kept = [[i] for i in range(1000)]
        gc.collect(0)  # a young pass alone promotes, but freezes nothing
        assert gc.get_freeze_count() < at_start + len(kept)
        gc.collect(1)
        assert gc.get_freeze_count() >= at_start + len(kept)
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0
    assert governor._freeze_survivors not in gc.callbacks
    del kept


async def test_a_frozen_cycle_lives_until_the_reclaim_pass_frees_it(thawed: None) -> None:
    governor = GcGovernor()
    async with trio.open_nursery() as nursery:
        await nursery.start(governor.run)
        cycle = _Cycle()
        alive = weakref.ref(cycle)
        gc.collect(1)  # frozen with the survivors
        del cycle
        gc.collect()  # an ordinary full pass does not walk frozen objects
        assert alive() is not None
        assert governor.reclaim() >= 1
        assert alive() is None
        counters, gauges = governor.collect()
        assert counters.metric("gc_reclaims") == Int(1)
        reclaimed = counters.metric("gc_reclaimed_objects")
        assert isinstance(reclaimed, Int)
        assert reclaimed.value >= 1
        pause = gauges.metric("gc_reclaim_pause_seconds")
        assert isinstance(pause, Float)
        assert pause.value > 0
        nursery.cancel_scope.cancel()


async def test_reclaims_come_every_reclaim_every_seconds(
    autojump_clock: trio.testing.MockClock, thawed: None
) -> None:
    governor = GcGovernor(reclaim_every=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(governor.run)
        await trio.sleep(150.0)
        assert governor.reclaims == 2
        nursery.cancel_scope.cancel()


async def test_the_runner_governs_only_when_asked_and_exports_what_it_did(
    autojump_clock: trio.testing.MockClock, thawed: None
) -> None:
    config = parse_config(
        {"probe": [{"name": "w", "type": "http", "targets": ["http://127.0.0.1:9/"]}]}
    )
    plain = Runner(config)
    assert plain.gc_governor is None
    runner = Runner(config, freeze_gc=True, gc_reclaim_every=30.0)
    assert runner.gc_governor is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        assert gc.get_freeze_count() > 0
        await trio.sleep(45.0)
        exported = [em for collect in runner.collectors() for em in collect()]
        reclaims = [em.metrics["gc_reclaims"] for em in exported if "gc_reclaims" in em.metrics]
        assert reclaims == [Int(runner.gc_governor.reclaims)]
        assert runner.gc_governor.reclaims >= 1
        runner.shutdown()
    assert gc.get_freeze_count() == 0  # undone when the run ends


def _attempt_frames_in_garbage() -> int:
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sum(
            1
            for obj in gc.garbage
            if type(obj).__name__ == "frame" and obj.f_code.co_name == "attempt_connect"
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("connect", [trio.open_tcp_stream, open_tcp_stream])
async def test_a_refused_connection_leaves_no_cycle_behind(connect: Any) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        gc.collect()
        with pytest.raises(OSError, match="all attempts to connect"):
            await connect("127.0.0.1", port)
    left = _attempt_frames_in_garbage()
    # trio's own leaves one cycle per attempt (what the test would catch coming back).
    assert left == (1 if connect is trio.open_tcp_stream else 0)
