"""Stats keeper throughput, export cost and memory, beside a bare memory channel.

Run: ``.venv/bin/python benchmarks/stats_keeper.py [--quick] [--profile]``

1. Throughput. 100 probe tasks send pre-built ``ProbeResult`` values the way
   ``trioprobe.probes._base.send_result`` does (``send_nowait``, falling back to ``await send()``
   when the buffer is full) into a buffer of 256:
     * project figure: ``StatsKeeper`` folds every result into its per-target accumulator and
       exports to a null consumer;
     * baseline: one task drains the same channel in batches (``receive`` then ``receive_nowait``
       until ``WouldBlock``) and does nothing with the results.
   Both run in this process, one after the other; the ratio is keeper / baseline.
2. Export. The keeper holds 10,000 targets; one tick is timed from the ``targets()`` call to the
   batch reaching the export channel (the keeper's own work: labels + clone per target) and to the
   last item received. A 1 ms ticker task runs meanwhile: its longest gap shows if probes stall.
3. Memory. Results for 1,000 targets flow through the keeper (exporting every 50 ms); the
   process's RSS is sampled after 10% of the results and at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import time
from collections.abc import Callable

import trio

from trioprobe.metrics import EventMetrics
from trioprobe.probes._base import send_result
from trioprobe.results import ProbeResult
from trioprobe.stats import StatsKeeper

PRODUCERS = 100
BUFFER = 256
TARGET_RATE = 300_000
TARGET_EXPORT_US = 10.0


async def _produce(
    send: trio.MemorySendChannel[ProbeResult], result: ProbeResult, count: int
) -> None:
    async with send:
        for _ in range(count):
            await send_result(send, result)


async def _start_producers(
    nursery: trio.Nursery, send: trio.MemorySendChannel[ProbeResult], total: int
) -> None:
    async with send:
        for i in range(PRODUCERS):
            result = ProbeResult(f"target-{i}", True, 0.001)
            nursery.start_soon(_produce, send.clone(), result, total // PRODUCERS)


async def baseline_rate(total: int) -> float:
    """Results/s through a bare channel drained in batches by one task."""
    send, receive = trio.open_memory_channel[ProbeResult](BUFFER)
    received = 0

    async def drain() -> None:
        nonlocal received
        async with receive:
            while True:
                try:
                    await receive.receive()
                except trio.EndOfChannel:
                    return
                received += 1
                while True:
                    try:
                        receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    received += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await _start_producers(nursery, send, total)
    elapsed = time.perf_counter() - start
    assert received == total, (received, total)
    return total / elapsed


async def keeper_rate(total: int) -> float:
    """Results/s through a ``StatsKeeper`` to a null consumer; checks that nothing was lost."""
    send, receive = trio.open_memory_channel[ProbeResult](BUFFER)
    export_send, export_receive = trio.open_memory_channel[EventMetrics](BUFFER)
    targets = [f"target-{i}" for i in range(PRODUCERS)]
    last: dict[str, EventMetrics] = {}

    async def null_consumer() -> None:
        async with export_receive:
            async for em in export_receive:
                last[em.label("dst")] = em

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(null_consumer)
        keeper = StatsKeeper(
            probe_type="bench", probe_name="bench", targets=lambda: targets, interval=0.5
        )
        await nursery.start(keeper.run, receive, export_send)
        await _start_producers(nursery, send, total)
    elapsed = time.perf_counter() - start
    counted = 0
    for em in last.values():
        metric = em.metric("total")
        assert metric is not None
        counted += int(str(metric))
    assert counted == total, (counted, total)
    return total / elapsed


async def export_cost(n_targets: int) -> tuple[float, float, float]:
    """(µs per target for the keeper's snapshot, µs per target until all received, max gap ms)."""
    send, receive = trio.open_memory_channel[ProbeResult](n_targets + 10)
    export_send, export_receive = trio.open_memory_channel[EventMetrics](BUFFER)
    targets = [f"target-{i}" for i in range(n_targets)]
    for target in targets:
        send.send_nowait(ProbeResult(target, True, 0.001))
    marks: dict[str, float] = {}
    interval = 1.0

    def current_targets() -> list[str]:
        marks.setdefault("targets", time.perf_counter())
        return targets

    gaps: list[float] = []
    done = trio.Event()

    async def ticker() -> None:
        # A stand-in probe: how late does a 1 ms sleep wake up while the export runs?
        while not done.is_set():
            before = time.perf_counter()
            await trio.sleep(0.001)
            gaps.append(time.perf_counter() - before)

    async def consume() -> None:
        received = 0
        async with export_receive:
            async for _ in export_receive:
                if received == 0:
                    marks["first"] = time.perf_counter()
                received += 1
                if received == n_targets:
                    marks["last"] = time.perf_counter()
                    done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        keeper = StatsKeeper(
            probe_type="bench", probe_name="bench", targets=current_targets, interval=interval
        )
        nursery.start_soon(keeper.run, receive, export_send)
        await trio.sleep(interval / 2)  # everything folded; then time only the tick
        gaps.clear()
        nursery.start_soon(ticker)
        await done.wait()
        send.close()
    snapshot = (marks["first"] - marks["targets"]) / n_targets * 1e6
    delivered = (marks["last"] - marks["targets"]) / n_targets * 1e6
    return snapshot, delivered, max(gaps) * 1e3


async def memory_run(total: int, n_targets: int = 1000) -> tuple[float, float, int]:
    """(RSS KiB after 10% of the results, RSS KiB at the end, exports received)."""
    send, receive = trio.open_memory_channel[ProbeResult](BUFFER)
    export_send, export_receive = trio.open_memory_channel[EventMetrics](BUFFER)
    targets = [f"target-{i}" for i in range(n_targets)]
    results = [ProbeResult(t, i % 7 != 0, 0.001 * (i % 13)) for i, t in enumerate(targets)]
    samples: list[float] = []
    exports = 0

    async def consume() -> None:
        nonlocal exports
        async with export_receive:
            async for _ in export_receive:
                exports += 1

    async def produce() -> None:
        async with send:
            for i in range(total):
                await send_result(send, results[i % n_targets])
                if i == total // 10 or i == total - 1:
                    await trio.sleep(0.06)  # let a tick export, then measure
                    gc.collect()
                    samples.append(_rss_kib())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        keeper = StatsKeeper(
            probe_type="bench", probe_name="bench", targets=lambda: targets, interval=0.05
        )
        nursery.start_soon(keeper.run, receive, export_send)
        nursery.start_soon(produce)
    return samples[0], samples[1], exports


def _rss_kib() -> float:
    # Resident set size from /proc (Linux); tracemalloc would slow the run tenfold.
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def _profile(fn: Callable[[], object]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 10 s)")
    parser.add_argument("--profile", action="store_true", help="cProfile the keeper run")
    args = parser.parse_args()
    total = 300_000 if args.quick else 2_000_000
    memory_total = 300_000 if args.quick else 10_000_000
    export_targets = 10_000

    # Warm up both paths once (imports, allocator) so the order of the runs does not matter.
    trio.run(baseline_rate, 20_000)
    trio.run(keeper_rate, 20_000)
    base = trio.run(baseline_rate, total)
    keeper = trio.run(keeper_rate, total)
    print(f"throughput ({total:,} results, {PRODUCERS} probe tasks, buffer {BUFFER}):")
    print(f"  bare memory channel, batch drain: {base:12,.0f} results/s")
    print(f"  StatsKeeper -> null consumer:     {keeper:12,.0f} results/s")
    print(f"  ratio keeper/baseline:            {keeper / base:12.2f}")
    verdict = "meets" if keeper >= TARGET_RATE else "MISSES"
    print(f"  target >= {TARGET_RATE:,} results/s: {verdict}")

    snapshot, delivered, gap = trio.run(export_cost, export_targets)
    print(f"export of {export_targets:,} targets in one tick:")
    print(f"  keeper snapshot (labels + clone): {snapshot:8.2f} µs/target")
    print(f"  until the consumer has them all:  {delivered:8.2f} µs/target")
    print(f"  longest 1 ms-ticker gap meanwhile: {gap:7.2f} ms (probes stall if >> 1 ms)")
    verdict = "meets" if snapshot <= TARGET_EXPORT_US else "MISSES"
    print(f"  target <= {TARGET_EXPORT_US:g} µs/target (keeper snapshot): {verdict}")

    before, after, exports = trio.run(memory_run, memory_total)
    print(f"memory, {memory_total:,} results over 1,000 targets ({exports:,} exports):")
    print(f"  RSS after 10%: {before:10,.0f} KiB   at the end: {after:10,.0f} KiB")
    print(f"  growth: {after - before:+,.0f} KiB ({'flat' if after - before < 256 else 'GROWS'})")

    if args.profile:
        _profile(lambda: trio.run(keeper_rate, total // 4))


if __name__ == "__main__":
    main()
