"""trioprobe.zmqnet beside raw blocking pyzmq, in one run, same message size and concurrency.

Each scenario runs its server in a separate process and its client in this one:

1. round trip, REP side:  raw REQ -> raw REP           vs  raw REQ -> trioprobe RepServer   (p50)
2. round trip, client:    raw REQ -> raw REP           vs  trioprobe Client -> raw REP      (p50)
3. ROUTER echo:           raw DEALER -> raw ROUTER     vs  raw DEALER -> trioprobe RouterServer
                          (--inflight requests outstanding; throughput)
4. full stack, for information: trioprobe Client -> trioprobe RouterServer.

Targets (issue 5): RouterServer echo throughput >= 0.9x raw; RepServer p50 <= raw + 50 us;
Client p50 <= 2x raw REQ/REP.

Usage: .venv/bin/python benchmarks/zmq_reqrep.py [--quick] [--rounds N] [--seconds S] [--size B]
[--inflight N]. Scenarios 1 and 3 run ``--rounds`` times, raw and ours alternated; each goal
is judged on the median of the per-round figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


# -- servers (run in a child process: `zmq_reqrep.py --serve KIND`) ------------------------------


def serve(kind: str) -> None:
    if kind in ("raw-rep", "raw-router"):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REP if kind == "raw-rep" else zmq.ROUTER)
        sock.linger = 0
        sock.bind("tcp://127.0.0.1:*")
        print(sock.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
        if kind == "raw-rep":
            while True:
                sock.send(sock.recv())
        else:
            while True:
                sock.send_multipart(sock.recv_multipart())
    import trio

    from trioprobe.zmqnet import RepServer, RouterServer

    async def echo(request: bytes) -> bytes:
        return request

    async def main() -> None:
        server = RepServer if kind == "trio-rep" else RouterServer
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(server("tcp://127.0.0.1:0", echo).run)
            print(addr, flush=True)

    trio.run(main)


def start_server(kind: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    addr = proc.stdout.readline().strip()
    if not addr.startswith("tcp://"):
        proc.kill()
        raise SystemExit(f"server {kind} failed to start")
    return proc, addr


# -- clients (run here) --------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarize(latencies: list[float], elapsed: float) -> dict[str, float]:
    lat = sorted(latencies)
    return {
        "msgs": len(lat),
        "rate": len(lat) / elapsed,
        "p50": percentile(lat, 0.5) * 1e6,
        "p99": percentile(lat, 0.99) * 1e6,
        "mean": statistics.fmean(lat) * 1e6,
    }


def raw_req_client(addr: str, seconds: float, size: int) -> dict[str, float]:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = 5000
    sock.connect(addr)
    payload = b"x" * size
    for _ in range(200):  # warm-up: connection set-up and caches
        sock.send(payload)
        sock.recv()
    latencies = []
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    while True:
        t0 = clock()
        sock.send(payload)
        sock.recv()
        t1 = clock()
        latencies.append(t1 - t0)
        if t1 >= end:
            break
    elapsed = clock() - start
    sock.close()
    return summarize(latencies, elapsed)


def raw_dealer_client(addr: str, seconds: float, size: int, inflight: int) -> dict[str, float]:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = 5000
    sock.connect(addr)
    request = [b"", b"x" * size]
    for _ in range(200):
        sock.send_multipart(request)
        sock.recv_multipart()
    for _ in range(inflight):
        sock.send_multipart(request)
    count = 0
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    while True:
        sock.recv_multipart()
        count += 1
        if count % 256 == 0 and clock() >= end:
            break
        sock.send_multipart(request)
    elapsed = clock() - start
    for _ in range(inflight - 1):
        sock.recv_multipart()
    sock.close()
    return {"msgs": count, "rate": count / elapsed}


def trio_client(addr: str, seconds: float, size: int) -> dict[str, float]:
    import trio

    from trioprobe.zmqnet import Client

    async def main() -> dict[str, float]:
        payload = b"x" * size
        latencies: list[float] = []
        async with Client(addr, timeout=5, retries=1) as client:
            for _ in range(200):
                await client.send(payload)
            clock = time.perf_counter
            start = clock()
            end = start + seconds
            while True:
                t0 = clock()
                await client.send(payload)
                t1 = clock()
                latencies.append(t1 - t0)
                if t1 >= end:
                    break
            return summarize(latencies, clock() - start)

    return trio.run(main)


def run(kind: str, client: Callable[[str], dict[str, float]]) -> dict[str, float]:
    proc, addr = start_server(kind)
    try:
        return client(addr)
    finally:
        proc.terminate()
        proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about 30 s in all)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated raw/ours rounds for the goals (3)"
    )
    parser.add_argument("--seconds", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--size", type=int, default=56, help="payload bytes (default 56)")
    parser.add_argument("--inflight", type=int, default=100, help="pipelined DEALER requests")
    parser.add_argument("--json", default=None, help="append the figures as a JSON line here")
    parser.add_argument(
        "--only", default=None, choices=["rep", "client", "echo", "full"], help="one scenario"
    )
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    seconds = args.seconds or (0.8 if args.quick else 5.0)
    size, inflight = args.size, args.inflight

    def req(addr: str) -> dict[str, float]:
        return raw_req_client(addr, seconds, size)

    def dealer(addr: str) -> dict[str, float]:
        return raw_dealer_client(addr, seconds, size, inflight)

    def ours(addr: str) -> dict[str, float]:
        return trio_client(addr, seconds, size)

    print(
        f"payload {size} B, {seconds:g} s per measurement, {inflight} in flight for echo; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if args.only:
        kind, client_fn = {
            "rep": ("trio-rep", req),
            "client": ("raw-rep", ours),
            "echo": ("trio-router", dealer),
            "full": ("trio-router", ours),
        }[args.only]
        base = run(
            "raw-router" if args.only == "echo" else "raw-rep",
            dealer if args.only == "echo" else req,
        )
        got = run(kind, client_fn)
        print("baseline", base)
        print("ours    ", got)
        return
    # Alternated rounds: the machine's load moves both sides of a pair together within a round
    # and apart between rounds, so each goal is judged on the median of per-round figures.
    rounds: list[tuple[dict[str, float], ...]] = []
    for _ in range(args.rounds):
        rounds.append(
            (
                run("raw-rep", req),
                run("trio-rep", req),
                run("raw-router", dealer),
                run("trio-router", dealer),
            )
        )
    client = run("raw-rep", ours)
    full = run("trio-router", ours)
    raw_rr, rep, raw_echo, router = rounds[-1]

    def line(name: str, figure: str) -> None:
        print(f"  {name:<46} {figure}")

    def rt(r: dict[str, float]) -> str:
        return f"p50 {r['p50']:7.1f} us  p99 {r['p99']:7.1f} us  {r['rate']:9,.0f} msg/s"

    deltas = [r[1]["p50"] - r[0]["p50"] for r in rounds]
    echo_ratios = [r[3]["rate"] / r[2]["rate"] for r in rounds]
    rep_delta = statistics.median(deltas)
    echo_ratio = statistics.median(echo_ratios)
    print(f"\n1. RepServer round trip (raw REQ client), {len(rounds)} alternated rounds")
    for i, (a, b, _, _) in enumerate(rounds, 1):
        line(f"round {i}: raw REQ -> raw REP (baseline)", rt(a))
        line(f"round {i}: raw REQ -> trioprobe RepServer", rt(b))
    line(
        "p50 difference, median (goal <= +50 us)",
        f"{rep_delta:+.1f} us  (rounds: {', '.join(f'{d:+.1f}' for d in deltas)})  "
        + ("met" if rep_delta <= 50 else "NOT met"),
    )
    print("\n2. Client round trip (raw REP server)")
    line("raw REQ -> raw REP (last round's baseline)", rt(raw_rr))
    line("trioprobe Client -> raw REP", rt(client))
    client_ratio = client["p50"] / raw_rr["p50"]
    line("p50 ratio (goal <= 2x)", f"{client_ratio:.2f}x")
    print(f"\n3. ROUTER echo throughput (raw DEALER, {inflight} in flight)")
    for i, (_, _, a, b) in enumerate(rounds, 1):
        line(
            f"round {i}: raw ROUTER / RouterServer (16 w)",
            f"{a['rate']:9,.0f} / {b['rate']:9,.0f} msg/s",
        )
    line(
        "throughput ratio, median (goal >= 0.9x)",
        f"{echo_ratio:.2f}x  (rounds: {', '.join(f'{r:.2f}' for r in echo_ratios)})  "
        + ("met" if echo_ratio >= 0.9 else "NOT met"),
    )
    print("\n4. full stack (information)")
    line("trioprobe Client -> trioprobe RouterServer", rt(full))
    line("p50 ratio to raw REQ/REP", f"{full['p50'] / raw_rr['p50']:.2f}x")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        record = {
            "timestamp": time.time(),
            "seconds": seconds,
            "size": size,
            "inflight": inflight,
            "raw_reqrep": raw_rr,
            "rep_server": rep,
            "client": client,
            "raw_router_echo": raw_echo,
            "router_server_echo": router,
            "full_stack": full,
            "rep_p50_delta_us": rep_delta,
            "rep_p50_deltas_us": deltas,
            "router_echo_ratios": echo_ratios,
            "client_p50_ratio": client_ratio,
            "router_echo_ratio": echo_ratio,
        }
        with open(args.json, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
