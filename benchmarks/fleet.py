"""A fleet of ``trioprobe run`` agents on one machine: coverage, takeover, moved share, etcd
writes, and each agent's CPU and RSS.

Run: ``.venv/bin/python benchmarks/fleet.py [--agents 10] [--targets 20000] [--interval 10]``

Needs Debian's ``etcd`` (etcd-server). One etcd and one target server (an asyncio HTTP server in
a thread of this process, logging which agent probed which target from the ``X-Agent`` header
each agent's config sends) run on loopback; the agents are separate processes, so their CPU and
RSS are their own (read from /proc). Phases:

1. ``agents - 1`` agents start; once every target is probed by exactly ``replicas`` agents
   (steady state), a window of ``--window`` seconds measures coverage, the etcd write rate
   (from etcd's own /metrics: puts, deletes, txns, lease grants, renewals and revokes) and each
   agent's CPU.
2. The last agent joins: the moved share is the share of (target, owner) assignments that
   changed, beside ``1/N``.
3. One agent is killed with SIGKILL: the takeover time is the longest time, over the targets it
   probed, from the kill to the first probe by the target's new owner; the goal is
   ``lease_ttl + interval``.

Then ``trioprobe run --workers 2`` beside ``--workers 1`` on the same kind of targets (no etcd):

4. CPU per probe: ``--cpu-targets`` targets every second for ``--workers-window`` seconds, the
   CPU of the parent and its workers together (from /proc) over the probes the server counted;
   goal: two workers within 10 % of one (the parent adds nothing per probe).
5. The most targets at a 1 s interval with < 1 % of the probes missed (counted by the target
   server over the window), for each: a doubling ramp, then one step between the last good and
   the first bad size. The target server shares the machine's cores: its own CPU is printed
   beside each step. Goal: the workers' figure scales >= 1.8x.

Every figure is printed beside its goal (``goal ...: met`` / ``NOT met``). ``--part fleet`` or
``--part workers`` runs one half. The defaults are the issue's full size (about 8-10 minutes on
a quiet 2-core machine); on a shared machine use a reduced one and quote the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TargetServer:
    """HTTP/1.1 keep-alive server logging (time, agent, path) per request."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.log: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1].decode()
                agent = ""
                for line in lines:
                    if line[:8].lower() == b"x-agent:":
                        agent = line[8:].strip().decode()
                self.times.append(time.monotonic())
                self.log.append((agent, path))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def window(self, since: float, until: float) -> dict[str, set[str]]:
        n = len(self.times)
        lo = bisect.bisect_left(self.times, since, 0, n)
        hi = bisect.bisect_left(self.times, until, 0, n)
        out: dict[str, set[str]] = defaultdict(set)
        for agent, path in self.log[lo:hi]:
            out[path].add(agent)
        return out

    def after(self, since: float) -> list[tuple[float, str, str]]:
        n = len(self.times)
        lo = bisect.bisect_left(self.times, since, 0, n)
        return [(self.times[i], *self.log[i]) for i in range(lo, n)]


def start_etcd(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(binary):
        sys.exit("benchmarks/fleet.py: error: etcd not found (install Debian's etcd-server)")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            binary,
            "--name=n1",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=n1={peer}",
            "--log-level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{client}/health", timeout=1):
                return proc, client
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("benchmarks/fleet.py: error: etcd did not start")


WRITE_METRICS = (
    "etcd_mvcc_put_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_txn_total",
    "etcd_debugging_lease_granted_total",
    "etcd_debugging_lease_renewed_total",
    "etcd_debugging_lease_revoked_total",
)


def etcd_writes(client: str) -> float:
    with urllib.request.urlopen(f"{client}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for name in WRITE_METRICS:
        for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M):
            total += float(m.group(1))
    return total


BASELINE = """
[[probe]]
name = "web"
type = "http"
targets_file = "{targets}"
interval = {interval}
timeout = {timeout}
headers = {{ "X-Agent" = "{agent}" }}
"""

CONFIG = """
[fleet]
etcd = ["{etcd}"]
name = "bench"
agent = "{agent}"
replicas = {replicas}
lease_ttl = {ttl}

[[probe]]
name = "web"
type = "http"
targets_file = "targets.txt"
interval = {interval}
timeout = {timeout}
headers = {{ "X-Agent" = "{agent}" }}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--targets", type=int, default=20_000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--ttl", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--settle-limit", type=float, default=180.0)
    parser.add_argument("--part", choices=("all", "fleet", "workers"), default="all")
    parser.add_argument("--cpu-targets", type=int, default=1000)
    parser.add_argument("--workers-window", type=float, default=10.0)
    parser.add_argument("--ramp-start", type=int, default=1000)
    parser.add_argument("--ramp-max", type=int, default=32000)
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run one agent without [fleet] on one agent's share of the targets",
    )
    args = parser.parse_args()
    workdir = args.workdir = Path(tempfile.mkdtemp(prefix="trioprobe-fleet-bench-"))
    server = TargetServer()
    etcd, client = start_etcd(workdir)
    (workdir / "targets.txt").write_text(
        "".join(f"http://127.0.0.1:{server.port}/t/{i}\n" for i in range(args.targets))
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    print(f"load average at start: {Path('/proc/loadavg').read_text().split()[:3]}")
    try:
        if args.part in ("all", "fleet"):
            run(args, workdir, server, client, procs)
            stop_all(procs)  # the workers part measures alone
        if args.part in ("all", "workers"):
            workers_part(args, workdir, server)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        etcd.terminate()
        etcd.wait(15)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"took {time.monotonic() - started:.0f}s; load average at the end: "
        f"{Path('/proc/loadavg').read_text().split()[:3]}"
    )


def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def start_agent(
    args: argparse.Namespace, workdir: Path, client: str, name: str
) -> subprocess.Popen[bytes]:
    config = workdir / f"{name}.toml"
    config.write_text(
        CONFIG.format(
            etcd=client,
            agent=name,
            replicas=args.replicas,
            ttl=args.ttl,
            interval=args.interval,
            timeout=min(5.0, args.interval / 2),
        )
    )
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child's for its lifetime
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    finally:
        log.close()


def baseline(args: argparse.Namespace, workdir: Path) -> None:
    """One process without [fleet] probing one agent's share: its CPU per probe, for comparison."""
    share = args.targets * args.replicas // (args.agents - 1)
    lines = (workdir / "targets.txt").read_text().splitlines()[:share]
    (workdir / "baseline.txt").write_text("".join(f"{line}\n" for line in lines))
    config = workdir / "baseline.toml"
    config.write_text(
        BASELINE.format(
            targets="baseline.txt",
            interval=args.interval,
            timeout=min(5.0, args.interval / 2),
            agent="baseline",
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    try:
        time.sleep(3 * args.interval)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.window)
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        per_probe = cpu / (share / args.interval)
        print(
            f"baseline without [fleet], {share} targets: CPU {cpu * 100:.1f}% "
            f"({per_probe * 1e6:.0f} us/probe), RSS {rss_mib(proc.pid):.0f} MiB"
        )
    finally:
        proc.kill()
        proc.wait()


def settle(args: argparse.Namespace, server: TargetServer, live: set[str]) -> float:
    """Seconds until every target was probed by exactly ``replicas`` of ``live`` in the last
    two intervals (or exit when it does not happen within --settle-limit)."""
    start = time.monotonic()
    span = 2 * args.interval + 1
    while time.monotonic() - start < args.settle_limit:
        now = time.monotonic()
        seen = server.window(now - span, now)
        present = set().union(*seen.values()) if seen else set()
        if (
            len(seen) == args.targets
            and present == live
            and all(len(s) == args.replicas and s <= live for s in seen.values())
        ):
            return time.monotonic() - start
        time.sleep(1)
    for name in sorted(live):
        lines = (args.workdir / f"{name}.log").read_text(errors="replace").splitlines()
        notes = [ln for ln in lines if not ln.startswith(("ok:", "FAILING:", "up:", "DOWN:"))]
        print(f"--- {name} ({len(lines)} lines):", *notes[-8:], sep="\n  ")
    # Measured all the same (the figures then say how far from steady the fleet was).
    print(f"NOT settled within {args.settle_limit}s: {coverage(args, server, live)}")
    return time.monotonic() - start


def coverage(args: argparse.Namespace, server: TargetServer, live: set[str]) -> str:
    now = time.monotonic()
    seen = server.window(now - 2 * args.interval - 1, now)
    exact = sum(len(s & live) == args.replicas for s in seen.values())
    return f"{len(seen)}/{args.targets} targets probed, {exact} by exactly {args.replicas} agents"


def owners(args: argparse.Namespace, server: TargetServer) -> dict[str, frozenset[str]]:
    now = time.monotonic()
    span = 2 * args.interval + 1
    return {p: frozenset(s) for p, s in server.window(now - span, now).items()}


def run(
    args: argparse.Namespace,
    workdir: Path,
    server: TargetServer,
    client: str,
    procs: dict[str, subprocess.Popen[bytes]],
) -> None:
    if args.baseline:
        baseline(args, workdir)
    names = [f"agent-{i}" for i in range(args.agents)]
    print(
        f"fleet: {args.agents} agents, {args.targets} targets, replicas={args.replicas}, "
        f"interval={args.interval}s, lease_ttl={args.ttl}s, {os.cpu_count()} CPUs"
    )
    for name in names[:-1]:
        procs[name] = start_agent(args, workdir, client, name)
    live = set(names[:-1])
    took = settle(args, server, live)
    print(f"steady state {took:.1f}s after the last start: {coverage(args, server, live)}")

    cpu0 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
    writes0, t0 = etcd_writes(client), time.monotonic()
    time.sleep(args.window)
    writes1, t1 = etcd_writes(client), time.monotonic()
    cpu1 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
    rate = (writes1 - writes0) / (t1 - t0)
    print(f"coverage over the window: {coverage(args, server, live)} (goal 100 %)")
    print(
        f"etcd writes: {rate:.2f}/s for {len(live)} agents = {rate / len(live):.2f}/s per agent "
        f"(goal <= 1 per agent per second in steady state: {verdict(rate / len(live) <= 1)})"
    )
    per_probe = args.targets * args.replicas / len(live) / args.interval
    for n in sorted(procs):
        cpu = (cpu1[n] - cpu0[n]) / (t1 - t0)
        print(
            f"  {n}: CPU {cpu * 100:.1f}% ({cpu / per_probe * 1e6:.0f} us/probe), "
            f"RSS {rss_mib(procs[n].pid):.0f} MiB"
        )

    before = owners(args, server)
    procs[names[-1]] = start_agent(args, workdir, client, names[-1])
    live.add(names[-1])
    joined = time.monotonic()
    took = settle(args, server, live)
    # A window that starts after the join: every target's owners as they are now.
    time.sleep(max(0.0, joined + 2 * args.interval + 1 - time.monotonic()))
    after = owners(args, server)
    changed = sum(len(after[p] - before.get(p, frozenset())) for p in after)
    share = changed / (args.targets * args.replicas)
    print(
        f"join: settled in {took:.1f}s; moved share {share:.4f} of assignments "
        f"(1/N = {1 / len(live):.4f}, goal <= 1.3/N = {1.3 / len(live):.4f}: "
        f"{verdict(share <= 1.3 / len(live))})"
    )

    victim = names[0]
    span = 2 * args.interval + 1
    killed = time.monotonic()
    earlier = server.window(killed - span, killed)
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait()
    live.discard(victim)
    took = settle(args, server, live)
    firsts: dict[str, float] = {}
    for t, agent, path in server.after(killed):
        if victim in earlier.get(path, ()) and agent not in earlier[path]:
            firsts.setdefault(path, t)
    moved = [p for p, s in earlier.items() if victim in s]
    worst = max(firsts.values()) - killed if firsts else float("nan")
    goal = args.ttl + args.interval
    print(
        f"kill -9 {victim}: {len(firsts)}/{len(moved)} of its targets taken over; takeover "
        f"{worst:.2f}s (goal <= lease_ttl + interval = {goal:.1f}s: {verdict(worst <= goal)}); "
        f"steady again after {took:.1f}s"
    )


WORKERS_CONFIG = """
[[probe]]
name = "web"
type = "http"
targets_file = "{targets}"
interval = 1
timeout = 0.9
headers = {{ "X-Agent" = "w" }}
"""


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (the parent and its workers)."""
    total = cpu_seconds(pid)
    # Every thread's children: Trio starts processes from a worker thread.
    children = [
        c for t in Path(f"/proc/{pid}/task").glob("*/children") for c in t.read_text().split()
    ]
    for child in children:
        with contextlib.suppress(OSError):  # exited meanwhile
            total += cpu_seconds(int(child))
    return total


def run_workers(
    args: argparse.Namespace, workdir: Path, server: TargetServer, count: int, workers: int
) -> tuple[float, float, float]:
    """``count`` targets at 1 s under ``--workers workers`` for a window: (missed share, CPU
    seconds per probe, the target server's CPU share)."""
    name = f"w{workers}-{count}"
    (workdir / f"{name}.txt").write_text(
        "".join(f"http://127.0.0.1:{server.port}/{name}/{i}\n" for i in range(count))
    )
    config = workdir / f"{name}.toml"
    config.write_text(WORKERS_CONFIG.format(targets=f"{name}.txt"))
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child's for its lifetime
    argv = [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--quiet"]
    proc = subprocess.Popen([*argv, "--workers", str(workers)], stdout=log, stderr=log, cwd=workdir)
    log.close()
    try:
        # Started and past the first (spread) round: nearly every target probed in the last
        # 1.5 s; bounded, so an overloaded size is measured (and shows as missed) all the same.
        deadline = time.monotonic() + min(60.0, args.settle_limit)
        while time.monotonic() < deadline:
            time.sleep(1)
            now = time.monotonic()
            recent = server.window(now - 1.5, now)
            if sum(p.startswith(f"/{name}/") for p in recent) >= count * 0.99:
                break
        time.sleep(2)
        me = os.getpid()
        cpu0, own0, n0, t0 = (
            tree_cpu(proc.pid),
            cpu_seconds(me),
            len(server.times),
            time.monotonic(),
        )
        time.sleep(args.workers_window)
        cpu1, own1, n1, t1 = (
            tree_cpu(proc.pid),
            cpu_seconds(me),
            len(server.times),
            time.monotonic(),
        )
        probes = n1 - n0
        expected = count * (t1 - t0)
        return (
            max(0.0, 1 - probes / expected),
            (cpu1 - cpu0) / max(1, probes),
            (own1 - own0) / (t1 - t0),
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def step(workers: int, count: int, missed: float, per_probe: float, server_cpu: float) -> None:
    print(
        f"  --workers {workers}, {count} targets at 1 s: missed {missed * 100:.2f} %, "
        f"{per_probe * 1e6:.0f} us CPU per probe; the target server took "
        f"{server_cpu * 100:.0f} % CPU"
    )


def ramp(args: argparse.Namespace, workdir: Path, server: TargetServer, workers: int) -> int:
    """The most targets at 1 s with < 1 % missed: doubling, then one step in between."""
    good, bad, count = 0, 0, args.ramp_start
    while count <= args.ramp_max:
        missed, per_probe, server_cpu = run_workers(args, workdir, server, count, workers)
        step(workers, count, missed, per_probe, server_cpu)
        if missed >= 0.01:
            bad = count
            break
        good, count = count, count * 2
    if good and bad:
        middle = (good + bad) // 2
        missed, per_probe, server_cpu = run_workers(args, workdir, server, middle, workers)
        step(workers, middle, missed, per_probe, server_cpu)
        if missed < 0.01:
            good = middle
    return good


def workers_part(args: argparse.Namespace, workdir: Path, server: TargetServer) -> None:
    print(f"--workers 2 beside --workers 1 ({os.cpu_count()} CPUs, targets every 1 s):")
    per_probe = {}
    for workers in (1, 2):
        missed, per_probe[workers], server_cpu = run_workers(
            args, workdir, server, args.cpu_targets, workers
        )
        print(
            f"  --workers {workers}, {args.cpu_targets} targets: {per_probe[workers] * 1e6:.0f} us "
            f"CPU per probe (parent and workers), missed {missed * 100:.2f} %; the target server "
            f"took {server_cpu * 100:.0f} % CPU"
        )
    ratio = per_probe[2] / per_probe[1]
    print(
        f"CPU per probe, --workers 2 / --workers 1: {ratio:.3f} "
        f"(goal within 10 %: {verdict(ratio <= 1.10)})"
    )
    most = {workers: ramp(args, workdir, server, workers) for workers in (1, 2)}
    scale = most[2] / most[1] if most[1] else float("nan")
    print(
        f"most targets at 1 s with < 1 % missed: --workers 1: {most[1]}, --workers 2: {most[2]}; "
        f"x{scale:.2f} (goal >= 1.8x: {verdict(scale >= 1.8)})"
    )


if __name__ == "__main__":
    main()
