"""CPU per probe of the ``http`` probe type's two paths against the same local server.

The server (benchmarks/http_probe.py's h11 keep-alive health endpoint, in its own process so
its CPU is not counted) answers a small JSON body. Each path probes it ``--probes`` times per
round, through ``probe_once`` (the whole probe: request, phases, result), from ``--targets``
concurrent targets; the figure is this process's CPU time per probe, the median of
``--rounds`` alternating rounds.

    PYTHONPATH=src python benchmarks/http_lean.py [--probes 3000] [--targets 20] [--rounds 5]

``--calls`` also counts the Python calls (functions and builtins, ``sys.setprofile``) of one
steady probe on each path, the least of 20: a figure no machine load changes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from types import FrameType

import trio

# The same server as benchmarks/http_probe.py's (this folder is on sys.path when run as a script).
from http_probe import start_server

from trioprobe.probes.http_probe import HTTPProbe, Options


async def _round(url: str, transport: str, probes: int, targets: int) -> float:
    """CPU seconds per probe of one round (after one warm-up probe per target)."""
    urls = [f"{url}?t={i}" for i in range(targets)]
    probe = HTTPProbe(Options(transport=transport), lambda: urls, interval=1.0, timeout=5.0)
    for target in urls:
        assert (await probe.probe_once(target)).success
    each = probes // targets

    async def loop(target: str) -> None:
        for _ in range(each):
            result = await probe.probe_once(target)
            assert result.success, result.error

    cpu0 = time.process_time()
    async with trio.open_nursery() as nursery:
        for target in urls:
            nursery.start_soon(loop, target)
    cpu = time.process_time() - cpu0
    await probe._clients.aclose()
    return cpu / (each * targets)


async def _calls(url: str, transport: str) -> int:
    """Python calls of one steady probe (its connection kept), the least of 20."""
    probe = HTTPProbe(Options(transport=transport), lambda: [url], interval=1.0, timeout=5.0)
    assert (await probe.probe_once(url)).success
    counts = []
    for _ in range(20):
        calls = 0

        def count(frame: FrameType, event: str, arg: object) -> None:
            nonlocal calls
            calls += event in ("call", "c_call")

        sys.setprofile(count)
        try:
            await probe.probe_once(url)
        finally:
            sys.setprofile(None)
        counts.append(calls)
    await probe._clients.aclose()
    return min(counts)


async def _main(args: argparse.Namespace, url: str) -> None:
    if args.calls:
        for transport, name in (("httpx", "httpx path"), ("auto", "lean path ")):
            print(f"  {name}  Python calls per steady probe {await _calls(url, transport)}")
    per: dict[str, list[float]] = {"auto": [], "httpx": []}
    for _ in range(args.rounds):
        for transport in per:
            per[transport].append(await _round(url, transport, args.probes, args.targets))
    lean, httpx_ = (statistics.median(per[t]) * 1e6 for t in ("auto", "httpx"))
    print(f"{args.probes} probes x {args.rounds} rounds, {args.targets} concurrent targets")
    print(f"  httpx path  CPU per probe {httpx_:7.1f} us   (rounds: {_us(per['httpx'])})")
    print(f"  lean path   CPU per probe {lean:7.1f} us   (rounds: {_us(per['auto'])})")
    print(f"  httpx / lean                {httpx_ / lean:5.2f}x")


def _us(values: list[float]) -> str:
    return ", ".join(f"{v * 1e6:.0f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=3000)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", action="store_true", help="also count calls per probe")
    args = parser.parse_args()
    # The server runs in its own process, so its CPU is not counted.
    server, url = start_server()
    try:
        trio.run(_main, args, url)
    finally:
        assert server.stdin is not None
        server.stdin.close()  # it exits when its stdin closes
        server.wait()


if __name__ == "__main__":
    main()
