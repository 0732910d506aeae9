"""Issue 25 #3: /metrics is fresh at every scrape, whatever the ``stats_interval``.

The Prometheus surfacer reads the runner's keepers when it renders (at most every
``MIN_RENDER_INTERVAL``), so with ``interval = 1`` and the default ``stats_interval`` (10 s)
every 1 s scrape sees new counts.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from trioprobe.config import parse_config
from trioprobe.metrics import EventMetrics, Int, Kind
from trioprobe.probes import probe_types
from trioprobe.runner import Runner
from trioprobe.surfacers.prometheus import Options, PrometheusSurfacer


@pytest.fixture(autouse=True)
def _fake_type() -> Iterator[None]:
    with probe_types.registered("fake", "tests.core.fake_probe"):
        yield


def _total(body: bytes, dst: str) -> float:
    match = re.search(rb'trioprobe_probes_total\{dst="%s"[^}]*\} (\S+)' % dst.encode(), body)
    assert match is not None, body[:500]
    return float(match.group(1))


async def test_every_scrape_sees_new_counts_with_the_default_stats_interval(
    autojump_clock: Any,
) -> None:
    config = parse_config(
        {
            "probe": [{"name": "p", "type": "fake", "targets": ["a", "b"], "interval": 1.0}],
            "surfacer": [{"type": "prometheus", "port": 0}],
        }
    )
    assert config.probes[0][0].export_interval == 10.0  # the default this test is about
    runner = Runner(config)
    surfacer = runner.surfacers[0][0]
    assert isinstance(surfacer, PrometheusSurfacer)
    seen: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(1.5)  # every target probed once
        for _ in range(12):  # past the first export at 10 s
            body, _ = await surfacer.body("")
            seen.append(_total(body, "a"))
            await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    # One probe per second: every scrape, one more (before: the same value for 10 scrapes).
    assert all(later > earlier for earlier, later in itertools.pairwise(seen)), seen


def _em(total: int, timestamp: float) -> EventMetrics:
    em = EventMetrics(Kind.CUMULATIVE, timestamp).add_label("dst", "a")
    return em.add_metric("total", Int(total))


async def test_a_live_source_is_read_once_per_render_and_never_goes_back(
    autojump_clock: Any,
) -> None:
    surfacer = PrometheusSurfacer(Options(port=0))
    reads = 0

    async def live() -> list[EventMetrics]:
        nonlocal reads
        reads += 1
        return [_em(reads * 10, 1000.0 + reads)]

    surfacer.attach_live_source(live)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(surfacer.body, "")
    assert (reads, surfacer.renders) == (1, 1)
    await trio.sleep(1.0)
    # An export cloned before that read, delivered after it, must not take the counter back.
    surfacer.record(_em(5, 1000.5))
    body, _ = await surfacer.body("")
    assert reads == 2
    assert _total(body, "a") == 20.0
    surfacer.record(_em(5, 1000.5))
    await trio.sleep(1.0)
    body, _ = await surfacer.body("")
    assert _total(body, "a") == 30.0
