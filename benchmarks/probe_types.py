"""Cost of the ping and tcp probe types at scale on loopback, beside smokeping_prober for ping.

Run: ``.venv/bin/python benchmarks/probe_types.py [--quick] [--targets N] [--json]`` (root, or a
group inside ``net.ipv4.ping_group_range``, for ping).

1. ping: N targets (127.0.x.y, default 1,000) every 1 s, one echo request each, through the
   probe's single IPv4 socket. Counted over a measured window after a warm-up: results, missed
   probes (ticks in the window with no result), failures (no reply in time), this process's CPU
   time per probe, and RTT p50/p99.
2. smokeping_prober (Debian's ``prometheus-smokeping-prober``, Go) pinging the same N hosts every
   1 s: its CPU time per ping (from /proc) and requests/replies (from its /metrics), same window.
3. tcp: N targets every 5 s, each its own 127.0.x.y address with a listener in a **separate
   process** (a Trio echo server), each probe connect + ``query``/``expect`` + close. Same
   figures; CPU is the probing side only.

Only 127.0.0.0/8 addresses are used. All figures depend on the machine's load; the run prints
the load average so a reader can judge.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

import trio

from trioprobe.probes import Probe, ping, tcp
from trioprobe.results import ProbeResult


def _addresses(n: int) -> list[str]:
    # 127.0.0.x, 127.0.1.x ...: skip .0 and .255 so every address is an ordinary host.
    return [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(n)]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(
    probe: Probe, n: int, interval: float, warmup: float, window: float
) -> dict[str, float]:
    """Run ``probe`` and count its results inside [warm-up end, warm-up end + window)."""
    send, receive = trio.open_memory_channel[ProbeResult](100_000)
    got: list[ProbeResult] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run, send)
        start = trio.current_time()
        measuring = False
        cpu0 = 0.0
        with trio.move_on_at(start + warmup + window):
            async for result in receive:
                now = trio.current_time()
                if not measuring and now >= start + warmup:
                    measuring = True
                    cpu0 = time.process_time()
                if measuring:
                    got.append(result)
        cpu = time.process_time() - cpu0
        nursery.cancel_scope.cancel()
    expected = n * round(window / interval)
    ok = [r for r in got if r.success]
    return {
        "targets": n,
        "interval_s": interval,
        "window_s": window,
        "expected": expected,
        "results": len(got),
        "missed": max(0, expected - len(got)),
        "failed": len(got) - len(ok),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_probe": round(cpu / max(1, len(got)) * 1e6, 1),
        "cpu_share_of_one_core": round(cpu / window, 3),
        "rtt_p50_ms": round(_percentile([r.latency for r in ok], 0.5) * 1e3, 3),
        "rtt_p99_ms": round(_percentile([r.latency for r in ok], 0.99) * 1e3, 3),
    }


def bench_ping(n: int, warmup: float, window: float) -> dict[str, float]:
    targets = _addresses(n)
    options = ping.Options(packets=1, ip_version=4)
    probe = ping.PingProbe(options, lambda: targets, interval=1.0, timeout=0.9)
    return trio.run(_measure, probe, n, 1.0, warmup, window)


# -- smokeping_prober -----------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metric_sum(text: str, name: str) -> float:
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def bench_smokeping(n: int, warmup: float, window: float) -> dict[str, float] | str:
    binary = shutil.which("prometheus-smokeping-prober") or shutil.which("smokeping_prober")
    if binary is None:
        return "prometheus-smokeping-prober not installed"
    port = _free_port()
    # Its default config file (/etc/prometheus/smokeping_prober.yml) may add hosts of its own.
    config = tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False)  # noqa: SIM115
    with config:
        config.write("targets: []\n")
    argv = [
        binary,
        f"--config.file={config.name}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--ping.interval=1s",
        "--privileged",
        "--log.level=error",
        *_addresses(n),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=60) as resp:
                return str(resp.read().decode())

        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode()[-500:] if proc.stderr else ""
                return f"smokeping_prober exited ({proc.returncode}): {err}"
            try:
                scrape()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    return f"smokeping_prober did not serve /metrics: {exc}"
                time.sleep(0.1)
        time.sleep(warmup)
        before, cpu0 = scrape(), _cpu_seconds(proc.pid)
        time.sleep(window)
        after, cpu1 = scrape(), _cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.unlink(config.name)
    sent = _metric_sum(after, "smokeping_requests_total") - _metric_sum(
        before, "smokeping_requests_total"
    )
    received = _metric_sum(after, "smokeping_response_duration_seconds_count") - _metric_sum(
        before, "smokeping_response_duration_seconds_count"
    )
    cpu = cpu1 - cpu0
    return {
        "targets": n,
        "window_s": window,
        "expected": n * round(window),
        "sent": sent,
        "received": received,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_probe": round(cpu / max(1.0, sent) * 1e6, 1),
        "cpu_share_of_one_core": round(cpu / window, 3),
    }


# -- tcp ----------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SERVER = """
import sys, trio
async def echo(stream):
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass
async def main(port, hosts):
    listeners = []
    for host in hosts:
        listeners += await trio.open_tcp_listeners(port, host=host, backlog=128)
    print("ready", flush=True)
    await trio.serve_listeners(echo, listeners)
trio.run(main, int(sys.argv[1]), sys.argv[2:])
"""


def bench_tcp(n: int, warmup: float, window: float) -> dict[str, float]:
    targets = _addresses(n)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port), *targets], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError("tcp echo server did not start")
        options = tcp.Options(query="ping\n", expect="^ping")
        addresses = [f"{t}:{port}" for t in targets]
        probe = tcp.TCPProbe(options, lambda: addresses, interval=5.0, timeout=2.0)
        return trio.run(_measure, probe, n, 5.0, warmup, window)
    finally:
        server.terminate()
        server.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="short windows (figures noisier)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ping_window, tcp_window = (8.0, 10.0) if args.quick else (30.0, 60.0)
    runs: list[tuple[str, Callable[[], object]]] = [
        ("ping (trioprobe)", lambda: bench_ping(args.targets, 2.5, ping_window)),
        ("ping (smokeping_prober)", lambda: bench_smokeping(args.targets, 2.5, ping_window)),
        ("tcp (trioprobe)", lambda: bench_tcp(args.targets, 7.5, tcp_window)),
    ]
    report: dict[str, object] = {"loadavg_before": os.getloadavg(), "cpus": os.cpu_count()}
    for name, run in runs:
        try:
            report[name] = run()
        except OSError as exc:
            report[name] = f"could not run: {exc}"
    report["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, value in report.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
