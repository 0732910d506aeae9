"""/metrics under load: a render in short steps, shared bodies, bounded per-connection memory.

Issue 24 #5: 1,000 http targets rendered 12 MB in 1.3 s in one event-loop step, and four clients
that asked for /metrics and never read made the server hold a body copy each. Issue 19: a render
in a worker thread still stalled the loop (146 ms at 10,000 targets: the encoder's final join
holds the GIL), so a render is now a few series or samples per step, into slices never joined.
The verdicts here are counts (series and calls per loop step, renders, bytes allocated), never
wall-clock times.
"""

from __future__ import annotations

import sys
import threading
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from trioprobe.metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String
from trioprobe.surfacers import _slices, prometheus
from trioprobe.surfacers.prometheus import (
    MIN_RENDER_INTERVAL,
    SEND_SLICE,
    Options,
    PrometheusSurfacer,
    collect,
)


def target_series(i: int, probes: int = 10) -> EventMetrics:
    """A cumulative EventMetrics shaped like an http target's (counters, a map, a histogram)."""
    latency = Distribution.exponential(base=2.0, scale=0.001, count=20)
    for k in range(probes):
        latency.add_sample(0.001 * (k + 1))
    codes = Map("code")
    codes.increment("200", probes)
    em = EventMetrics(Kind.CUMULATIVE, 1000.0)
    em.add_label("ptype", "http").add_label("probe", "web").add_label("dst", f"http://t{i}/")
    em.add_metric("total", Int(probes)).add_metric("success", Int(probes))
    return em.add_metric("resp_code", codes).add_metric("latency", latency)


class _StepCounter(trio.abc.Instrument):
    """Counts, per event-loop task step, the series the Trio thread turned into samples and
    the function calls it made (as tests/core/test_step_work_guard.py does)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.in_step = 0
        self.max_per_step = 0
        self.calls = 0
        self._calls_at_start = 0
        self.max_calls_per_step = 0

    def count_call(self, frame: object, event: str, arg: object) -> None:
        if event in ("call", "c_call"):
            self.calls += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.in_step = 0
        self._calls_at_start = self.calls

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.max_per_step = max(self.max_per_step, self.in_step)
        calls = self.calls - self._calls_at_start
        self.max_calls_per_step = max(self.max_calls_per_step, calls)


@pytest.fixture
async def step_counter(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[_StepCounter, list[int]]]:
    counter = _StepCounter()
    everywhere = [0]  # in any thread: the render really happened
    original = prometheus.exported_values

    def counting(em: EventMetrics, **options: Any) -> Any:
        everywhere[0] += 1
        if threading.get_ident() == counter.thread:
            counter.in_step += 1
        return original(em, **options)

    monkeypatch.setattr(prometheus, "exported_values", counting)
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter, everywhere
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_a_scrape_renders_a_few_series_and_samples_per_step(
    step_counter: tuple[_StepCounter, list[int]],
) -> None:
    counter, everywhere = step_counter
    series = 1000
    surfacer = PrometheusSurfacer(Options(port=0))
    for i in range(series):
        surfacer.record(target_series(i))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # The app in memory, as the server calls it: no socket timeout can depend on machine load.
    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}
    sys.setprofile(counter.count_call)
    try:
        with trio.fail_after(300):  # hang guard only
            await surfacer.app(scope, receive, send)
        await trio.lowlevel.checkpoint()  # ends this task's step, so the instrument has seen it
    finally:
        sys.setprofile(None)
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert body.count(b"trioprobe_probes_total{") == series
    assert everywhere[0] >= series
    # The first render turned all 1,000 in one step; a thread's held the GIL for its final
    # join. Now: a few series per step, a bounded number of calls, no slice much over SEND_SLICE.
    assert counter.max_per_step <= prometheus._SERIES_PER_STEP, counter.max_per_step
    assert counter.max_calls_per_step < 2_000, counter.max_calls_per_step
    assert all(len(m.get("body", b"")) < 2 * SEND_SLICE for m in sent[1:])
    assert len(sent) > 10  # the 1,000 series' body went out in many slices


async def test_concurrent_scrapes_share_one_render(autojump_clock: object) -> None:
    surfacer = PrometheusSurfacer(Options(port=0))
    for i in range(200):
        surfacer.record(target_series(i))
    bodies: list[bytes] = []

    async def scrape() -> None:
        body, _ = await surfacer.body("")
        bodies.append(body)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(scrape)
    assert surfacer.renders == 1
    assert len(bodies) == 8
    assert len(set(bodies)) == 1
    # Same generation, much later: still the same body, no render.
    await trio.sleep(60)
    await scrape()
    assert surfacer.renders == 1
    # A change: rendered afresh (the body is older than MIN_RENDER_INTERVAL)...
    surfacer.record(target_series(0, probes=11))
    await scrape()
    assert surfacer.renders == 2
    # ...another change at once is not: scrapes that come together share a body...
    surfacer.record(target_series(0, probes=12))
    await trio.sleep(MIN_RENDER_INTERVAL / 2)
    await scrape()
    assert surfacer.renders == 2
    assert b'dst="http://t0/",probe="web",ptype="http"} 11.0' in bodies[-1]
    # ...until MIN_RENDER_INTERVAL (or twice a slow render's time) has passed: a 1 s scrape
    # interval sees every change.
    await trio.sleep(surfacer.reuse_for)
    await scrape()
    assert surfacer.renders == 3
    assert b'dst="http://t0/",probe="web",ptype="http"} 12.0' in bodies[-1]


async def _scrape_discarding(port: int) -> int:
    """Scrape /metrics, reading the reply in pieces and keeping none (so this test's client
    adds nothing to the memory traced); the bytes received."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = 0
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while chunk := await stream.receive_some(65536):
            received += len(chunk)
    return received


async def _never_read(port: int, requested: trio.Event) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        requested.set()
        await trio.sleep_forever()


async def test_clients_that_never_read_hold_no_copy_of_the_body() -> None:
    surfacer = PrometheusSurfacer(Options(port=0))
    for i in range(2000):
        surfacer.record(target_series(i))
    size = len((await surfacer.body(""))[0])
    assert size > 2_000_000  # far more than the kernel buffers of one loopback connection
    send, receive = trio.open_memory_channel[EventMetrics](0)
    readers = 4
    tracemalloc.start()
    try:
        with trio.fail_after(120):  # hang guard only
            async with trio.open_nursery() as nursery:
                await nursery.start(surfacer.run, receive)
                port = int(httpx.URL(str(surfacer.url)).port or 0)
                base, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                async with trio.open_nursery() as attack:
                    for _ in range(readers):
                        requested = trio.Event()
                        attack.start_soon(_never_read, port, requested)
                        await requested.wait()
                    # Each stalled connection now blocks in send_all; a scraper is still served.
                    await trio.testing.wait_all_tasks_blocked(cushion=0.2)
                    for _ in range(3):
                        assert await _scrape_discarding(port) > size
                    _, peak = tracemalloc.get_traced_memory()
                    attack.cancel_scope.cancel()
                send.close()
    finally:
        tracemalloc.stop()
    # Without slicing, every connection held its own copy of the whole body (h11 joins it).
    assert peak - base < size, (peak - base, size)
    assert surfacer.renders == 1


async def test_a_reused_body_still_drops_expired_series(autojump_clock: object) -> None:
    surfacer = PrometheusSurfacer(Options(port=0, expiry=60.0))
    surfacer.record(target_series(1))
    assert b'dst="http://t1/"' in (await surfacer.body(""))[0]
    await trio.sleep(30)
    surfacer.record(target_series(2))
    body, _ = await surfacer.body("")
    assert b'dst="http://t1/"' in body
    assert b'dst="http://t2/"' in body
    # Nothing recorded since, but t1 was last seen 61 s ago: the cached body is stale.
    await trio.sleep(31)
    body, _ = await surfacer.body("")
    assert b'dst="http://t1/"' not in body
    assert b'dst="http://t2/"' in body
    await trio.sleep(31)
    assert (await surfacer.body(""))[0] == b""


def _mixed_series() -> list[EventMetrics]:
    """Every kind of value, a name claimed by two types, an empty map, odd label text."""
    out = [target_series(i) for i in range(60)]
    gauge = EventMetrics(Kind.GAUGE, 1000.0).add_label("dst", 'a "quoted"\\ \n target')
    gauge.add_metric("latency", Float(0.5)).add_metric("version", String("1.2"))
    gauge.add_metric("empty", Map("code"))
    out.append(gauge.add_metric("srtt", Float(0.001)).add_metric("up", Int(1)))
    return out


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
async def test_a_body_in_slices_is_the_encoders_own_output(accept: str) -> None:
    """Encoded a few samples at a time, the body is byte for byte what the encoder writes in
    one go (headers once per family, OpenMetrics' EOF once), in slices of about SEND_SLICE."""
    series = _mixed_series()
    encoder, _ = prometheus.choose_encoder(accept)
    whole = encoder(_slices._Families(collect(series)))
    collector = prometheus._Collector()
    for em in series:
        collector.add(em)
    families = collector.families("trioprobe_")
    pieces = await _slices.encode_in_steps(families, prometheus._samples, encoder, 4096)
    assert b"".join(pieces) == whole
    assert len(pieces) > 3
    assert all(len(piece) < 4096 + 4096 for piece in pieces)
    surfacer = PrometheusSurfacer(Options(port=0))
    for em in series:
        surfacer.record(em)
    assert (await surfacer.body(accept))[0] == encoder(
        _slices._Families(collect(em for em, _ in surfacer._series.values()))
    )
