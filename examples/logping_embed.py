"""Embed a log pinger in a Trio program: ping a MemoryLog and a FileLog for a few seconds.

    .venv/bin/python examples/logping_embed.py [--etcd http://127.0.0.1:2379] [--seconds 3]

Prints each log's counters and latency quantiles, then exits.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import trio

from trioprobe.logping import Pinger, open_log, quantiles


async def ping(spec: str, seconds: float) -> None:
    async with open_log(spec, fsync=True) as log:
        # A separate reader and appender, as a real deployment would have.
        pinger = Pinger(log.appender, log.reader, log.next_index, ping_interval=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(pinger.run)
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()
    m = pinger.metrics
    q = {f"p{int(k * 100)}": f"{v * 1e3:.3f} ms" for k, v in quantiles(m.ping_latency).items()}
    print(f"{log.name}:")
    print(f"  counters: {m.counters()}")
    print(f"  last_applied: {m.last_applied}")
    print(f"  ping latency: {q}")


async def main(etcd: str | None, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        specs = ["memory", f"file:{Path(tmp) / 'ping.log'}"]
        if etcd:
            specs.append(f"etcd:{etcd}")
        async with trio.open_nursery() as nursery:
            for spec in specs:
                nursery.start_soon(ping, spec, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--etcd", help="also ping this etcd (its client URL)")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    trio.run(main, args.etcd, args.seconds)
