"""Benchmark: the Pinger's measured latency beside the bare append + read-back time.

For each log (MemoryLog, FileLog without and with fsync) this measures, in the same run:

- **bare**: one task appends an entry and waits until a reader task (tailing the same log the
  way the pinger's reader does) has seen it; the time from before ``append`` to that moment.
  Appends are paced at the pinger's interval, so both wake from the same idle gap;
- **direct**: append, then pull the next entry from an open reader in the same task, back to
  back (no task switch, hot caches: the floor);
- **pinger**: a ``Pinger`` pinging the log; its own append-to-read latency per ping.

The pinger's overhead is ``median(pinger) - median(bare)``; the target is that it stays within
10% of the bare time or 50 µs, whichever is larger.

    .venv/bin/python benchmarks/logping.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import trio

from trioprobe.logping import FileLog, MemoryLog, Pinger, PingOutcome, PingStatus

Log = MemoryLog | FileLog
ROUNDS = 10


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bare(make: Callable[[], tuple[Log, Log]], n: int, interval: float) -> list[float]:
    writer, reader = make()
    seen = 0
    changed = trio.Event()

    async def tail() -> None:
        nonlocal seen, changed
        async with aclosing(reader.read(await writer.next_index())) as entries:
            async for entry in entries:
                seen = entry.index
                changed.set()
                changed = trio.Event()

    out: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tail)
        await trio.sleep(0.01)
        next_at = trio.current_time()
        for _ in range(n):
            # Paced like the pinger, so both wake from the same idle gap (a back-to-back loop
            # keeps caches hot and would make the pinger look slower than it is).
            next_at += interval
            await trio.sleep_until(next_at)
            start = trio.current_time()
            index = await writer.append(b"P" + b"x" * 24)
            while seen < index:
                await changed.wait()
            out.append(trio.current_time() - start)
        nursery.cancel_scope.cancel()
    close(writer, reader)
    return out


async def direct(make: Callable[[], tuple[Log, Log]], n: int) -> list[float]:
    writer, reader = make()
    out: list[float] = []
    async with aclosing(reader.read(await writer.next_index())) as entries:
        for _ in range(n):
            start = trio.current_time()
            await writer.append(b"P" + b"x" * 24)
            await entries.__anext__()
            out.append(trio.current_time() - start)
    close(writer, reader)
    return out


async def pinger(make: Callable[[], tuple[Log, Log]], n: int, interval: float) -> list[float]:
    writer, reader = make()
    out: list[float] = []
    done = trio.Event()

    def on_ping(outcome: PingOutcome) -> None:
        if outcome.status is PingStatus.SUCCEEDED:
            out.append(outcome.latency)
        if len(out) >= n:
            done.set()

    p = Pinger(writer, reader, writer.next_index, ping_interval=interval, on_ping=on_ping)
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
        await done.wait()
        nursery.cancel_scope.cancel()
    close(writer, reader)
    aborted = p.metrics.pings_aborted + p.metrics.pings_append_failed
    if aborted:
        print(f"    (note: {aborted} pings did not succeed; raise the interval)")
    return out


def close(*logs: Log) -> None:
    for log in logs:
        if isinstance(log, FileLog | MemoryLog):
            log.close()


async def main(quick: bool) -> int:
    scale = 0.1 if quick else 1.0
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def memory() -> tuple[Log, Log]:
            log = MemoryLog()
            return log, log

        def file(fsync: bool) -> Callable[[], tuple[Log, Log]]:
            def make() -> tuple[Log, Log]:
                path = Path(tmp) / f"log{next(counter)}"
                return FileLog(path, fsync=fsync), FileLog(path, poll_interval=1.0)

            return make

        cases: list[tuple[str, Callable[[], tuple[Log, Log]], int, float]] = [
            ("MemoryLog", memory, int(3000 * scale), 0.002),
            ("FileLog fsync=False", file(False), int(2000 * scale), 0.002),
            ("FileLog fsync=True", file(True), int(300 * scale), 0.02),
        ]
        print(f"{'log':<20} {'what':<7} {'n':>5} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9}")
        for name, make, n, interval in cases:
            rows: dict[str, list[float]] = {"direct": [], "bare": [], "pinger": []}
            # Alternate in chunks so that drift in the machine's load (it is shared) or the
            # disk's fsync time hits bare and pinger alike.
            chunk = max(1, n // ROUNDS)
            for _ in range(ROUNDS):
                rows["direct"] += await direct(make, chunk)
                rows["bare"] += await bare(make, chunk, interval)
                rows["pinger"] += await pinger(make, chunk, interval)
            for what, samples in rows.items():
                print(
                    f"{name:<20} {what:<7} {len(samples):>5} {pct(samples, 0.5) * 1e6:>9.1f} "
                    f"{pct(samples, 0.9) * 1e6:>9.1f} {pct(samples, 0.99) * 1e6:>9.1f}"
                )
            b = statistics.median(rows["bare"])
            p = statistics.median(rows["pinger"])
            overhead = p - b
            allowed = max(0.1 * b, 50e-6)
            ok = overhead <= allowed
            failures += not ok
            print(
                f"{name:<20} pinger/bare = {p / b:.2f}, overhead {overhead * 1e6:+.1f} µs "
                f"(allowed {allowed * 1e6:.1f} µs): {'OK' if ok else 'OVER'}\n"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a tenth of the samples")
    sys.exit(trio.run(main, parser.parse_args().quick))
