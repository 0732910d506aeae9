"""A closed-loop request/reply benchmark (the reference's ``Client.Benchmark``).

``clients`` Lazy Pirate clients each keep exactly one request outstanding for ``duration``
seconds; the in-flight requests are abandoned when the time is up. Differences from the
reference: a dropped message is counted as a drop, not as an access with a latency of
``retries x timeout``; the latency distribution has percentiles; throughput is reported both
over wall time and, as the reference did, over the summed latency.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import attrs
import trio

from .._groups import open_nursery
from ._output import check_appendable_in_thread, write_in_thread
from .client import Client, TransportFactory, dealer_transport
from .errors import MessageDroppedError, RemoteError
from .latency import LatencyStats

__all__ = ["BenchmarkCounters", "BenchmarkResult", "benchmark"]


@attrs.define
class BenchmarkCounters:
    """Live counters a progress display may read while the benchmark runs."""

    messages: int = 0
    drops: int = 0
    errors: int = 0
    started: float = 0.0


@attrs.frozen
class BenchmarkResult:
    """What one :func:`benchmark` run measured; ``write`` appends it as one JSON line."""

    addr: str
    clients: int
    duration: float
    messages: int
    drops: int
    errors: int
    latency_total: float
    histogram: LatencyStats

    @property
    def throughput(self) -> float:
        """Replies per second of wall time."""
        return self.messages / self.duration if self.duration > 0 else 0.0

    @property
    def reference_throughput(self) -> float:
        """The reference's figure: messages over the *summed* latency of all clients."""
        return self.messages / self.latency_total if self.latency_total > 0 else 0.0

    def latency(self) -> dict[str, float]:
        """Latency statistics in nanoseconds (samples as a count)."""
        h = self.histogram
        return {
            "samples": h.samples,
            "total": h.total,
            "mean": h.mean,
            "stddev": h.stddev,
            "variance": h.variance,
            "minimum": h.minimum,
            "maximum": h.maximum,
            "range": h.maximum - h.minimum,
            "p50": h.percentile(0.5),
            "p90": h.percentile(0.9),
            "p99": h.percentile(0.99),
            "p99.9": h.percentile(0.999),
        }

    def serialize(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The reference's keys, our additions, then ``extra`` (which wins)."""
        data: dict[str, Any] = {
            "messages": self.messages,
            "latency (nsec)": self.histogram.total,
            "throughput (msg/sec)": self.reference_throughput,
            "latency distribution": self.latency(),
            "drops": self.drops,
            "errors": self.errors,
            "duration (sec)": self.duration,
            "wall throughput (msg/sec)": self.throughput,
            "n_clients": self.clients,
            "addr": self.addr,
            "timestamp": time.time(),
        }
        if extra:
            data.update(extra)
        return data

    def write(self, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> None:
        """Append one compact JSON line."""
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(self.serialize(extra), separators=(",", ":")) + "\n")


async def benchmark(
    addr: str,
    *,
    duration: float = 30.0,
    clients: int = 1,
    timeout: float = 5.0,  # noqa: ASYNC109 (per request, for the clients; not our deadline)
    retries: int = 3,
    message_size: int = 0,
    identity: str | None = None,
    results: str | os.PathLike[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    counters: BenchmarkCounters | None = None,
    transport_factory: TransportFactory = dealer_transport,
) -> BenchmarkResult:
    """Run the closed loop and return its result; append a JSON line to ``results`` if given.

    ``message_size`` pads each request to at least that many bytes (0: the reference's
    ``"msg <n> at <time>"`` text only). A ``results`` file that cannot be opened for append
    raises its ``OSError`` before the run starts.
    """
    if duration <= 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    if results is not None:
        await check_appendable_in_thread(results)
    live = counters if counters is not None else BenchmarkCounters()
    histogram = LatencyStats()
    latency_total = 0.0
    padding = b"\0" * message_size

    async def run_client(index: int) -> None:
        nonlocal latency_total
        name = identity
        if name is not None and clients > 1:
            name = f"{name}.{index}"
        async with Client(
            addr,
            identity=name,
            timeout=timeout,
            retries=retries,
            transport_factory=transport_factory,
        ) as client:
            n = 0
            while True:
                n += 1
                payload = f"msg {n} at {time.time():.6f}".encode()
                if len(payload) < message_size:
                    payload += padding[: message_size - len(payload)]
                start = trio.current_time()
                try:
                    await client.send(payload)
                except MessageDroppedError:
                    live.drops += 1
                    continue
                except RemoteError:
                    live.errors += 1
                    continue
                elapsed = trio.current_time() - start
                live.messages += 1
                latency_total += elapsed
                histogram.record(int(elapsed * 1e9))

    live.started = trio.current_time()
    with trio.move_on_after(duration):
        async with open_nursery() as nursery:
            for i in range(clients):
                nursery.start_soon(run_client, i)
    wall = trio.current_time() - live.started
    result = BenchmarkResult(
        addr=addr,
        clients=clients,
        duration=wall,
        messages=live.messages,
        drops=live.drops,
        errors=live.errors,
        latency_total=latency_total,
        histogram=histogram,
    )
    if results is not None:
        extras = {"name": identity} if identity is not None else {}
        extras.update(extra or {})
        await write_in_thread(partial(result.write, results, extras), f"results file {results}")
    return result
