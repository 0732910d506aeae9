"""/metrics: render time, body size and event-loop stalls per scrape, at 1,000 and 10,000 targets.

Run: ``.venv/bin/python benchmarks/metrics_render.py [--targets 1000 10000] [--scrapes 3]
[--freeze-gc]``

Each target is one cumulative series shaped like an http target's default export today
(probes, successes, a resp-code map, a 22-bucket latency histogram). For each size the
Prometheus surfacer is started on a free loopback port and scraped over HTTP ``--scrapes``
times, each after a change (so every scrape renders afresh); a 1 ms ticker task runs beside it.
Printed per size: bytes per body, seconds per scrape (request to last byte), and the ticker's
longest gap, which is what a probe on the same loop would wait at most during a scrape.
Then ``--concurrent`` scrapes at once, to show they share one render.

Figures depend on the machine and its load: say which when you quote them.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import httpx
import trio

from trioprobe.metrics import Distribution, EventMetrics, Int, Kind, Map
from trioprobe.surfacers.prometheus import Options, PrometheusSurfacer


def target_series(i: int, probes: int) -> EventMetrics:
    latency = Distribution.exponential(base=2.0, scale=0.001, count=20)
    for k in range(10):
        latency.add_sample(0.001 * (k + 1))
    codes = Map("code")
    codes.increment("200", probes)
    em = EventMetrics(Kind.CUMULATIVE, time.time())
    em.add_label("ptype", "http").add_label("probe", "web").add_label("dst", f"http://t{i}/")
    em.add_metric("total", Int(probes)).add_metric("success", Int(probes))
    return em.add_metric("resp_code", codes).add_metric("latency", latency)


async def _ticker(gaps: list[float]) -> None:
    last = time.perf_counter()
    while True:
        await trio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def measure(targets: int, scrapes: int, concurrent: int, freeze_gc: bool) -> None:
    surfacer = PrometheusSurfacer(Options(port=0))
    for i in range(targets):
        surfacer.record(target_series(i, 1))
    if freeze_gc:  # as `trioprobe run` does once the targets are probed (Runner(freeze_gc=True))
        gc.collect()
        gc.freeze()
    send, receive = trio.open_memory_channel[EventMetrics](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(surfacer.run, receive)
        gaps: list[float] = []
        nursery.start_soon(_ticker, gaps)
        times: list[float] = []
        sizes: list[int] = []
        url = f"{surfacer.url}/metrics"
        async with httpx.AsyncClient(base_url=str(surfacer.url), timeout=120) as client:
            for n in range(scrapes):
                surfacer.record(target_series(0, n + 2))  # a change: the next scrape renders
                await trio.sleep(surfacer.reuse_for + 0.1)  # past the time a body is reused
                gaps.clear()
                start = time.perf_counter()
                # A scraper in another process (as Prometheus is): the gaps are the server's.
                done = await trio.run_process(
                    ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url],
                    capture_stdout=True,
                )
                times.append(time.perf_counter() - start)
                sizes.append(int(done.stdout))
                max_gap = max(gaps, default=0.0)
            # The same ticker with no scrape, as long: what the machine's load alone costs.
            gaps.clear()
            await trio.sleep(times[-1])
            idle_gap = max(gaps, default=0.0)
            renders_before = surfacer.renders
            surfacer.record(target_series(0, 1))
            await trio.sleep(surfacer.reuse_for + 0.1)
            async with trio.open_nursery() as together:
                for _ in range(concurrent):
                    together.start_soon(client.get, "/metrics")
            shared = surfacer.renders - renders_before
        print(
            f"{targets:>6} targets: {statistics.median(sizes) / 1e6:6.2f} MB per body, "
            f"scrape {statistics.median(times):6.3f} s median ({min(times):.3f}-{max(times):.3f}), "
            f"longest loop gap during the last scrape {max_gap * 1000:6.1f} ms "
            f"(without a scrape: {idle_gap * 1000:.1f} ms); "
            f"{concurrent} concurrent scrapes -> {shared} render(s)"
        )
        send.close()
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--scrapes", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument(
        "--freeze-gc", action="store_true", help="gc.freeze() the series first, as the CLI does"
    )
    args = parser.parse_args()
    for targets in args.targets:
        trio.run(measure, targets, args.scrapes, args.concurrent, args.freeze_gc)


if __name__ == "__main__":
    main()
