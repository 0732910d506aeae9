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

Then ``trioprobe run --workers 2`` beside ``--workers 1`` on the same kind of targets (no etcd).
Both start once, each on its own targets file, and take turns: the one not measured is paused
(SIGSTOP, its parent and workers), so neither pays a start-up inside a window and both see the
same minutes of a shared machine:

4. CPU per probe: ``--cpu-targets`` targets every second, ``--rounds`` windows of
   ``--workers-window`` seconds each, the order alternating; the CPU of the parent and its
   workers together (from /proc) over the probes the server counted. Printed per round and as
   the ratio of the medians; goal: two workers within 10 % of one (the parent adds nothing per
   probe).
5. The most targets at a 1 s interval with < 1 % of the probes missed (counted by the target
   server over a window), for each: a doubling ramp from ``--ramp-start``, then one step
   between the last good and the first bad size, by rewriting the running process's targets
   file. The target server (a thread of this process) shares the machine's cores: its CPU is
   printed beside each step. Goal: the workers' figure scales >= 1.8x.

Every figure is printed beside its goal (``goal ...: met`` / ``NOT met``), with the load average.
``--part fleet`` or ``--part workers`` runs one half. The fleet part's defaults are the issue's
full size (about 8-10 minutes on a quiet 2-core machine); ``--part workers`` with its defaults
takes about 5 minutes. On a shared machine quote the load average beside every ratio.

Children: every process it starts (etcd, the agents, the ``--workers`` trees) runs in a process
group of its own, under ``setpriv --pdeathsig KILL`` when util-linux has it, and is registered with
a :class:`Reaper`. SIGTERM, SIGHUP and SIGINT become a clean exit, and on any exit (an error
included) the reaper resumes what it paused, asks each child to stop, and kills what is left,
its workers too; ``kill -9`` of the benchmark itself leaves the kernel's parent-death signal.
The target server holds one keep-alive connection per (target, agent): the benchmark raises its
soft ``RLIMIT_NOFILE`` to the hard limit at start and says so when that is still too low.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import statistics
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


class _Handler(asyncio.Protocol):
    """One keep-alive connection: answer each request, log (time, agent, path), count by the
    path's first segment. A protocol, not streams: at thousands of requests a second the server
    shares the machine's cores with what it measures, so it costs as little as it can."""

    def __init__(self, server: TargetServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self.server.record(head)
            replies += 1
        if replies and self.transport is not None:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * replies)


class TargetServer:
    """HTTP/1.1 keep-alive server logging (time, agent, path) per request, in a thread."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.log: list[tuple[str, str]] = []
        #: Requests per first path segment (``/w1/7`` counts under ``w1``).
        self.counts: dict[str, int] = defaultdict(int)
        #: Off for the workers part: there only the counts matter, and millions of entries would.
        self.logging = True
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _Handler(self), "127.0.0.1", 0, backlog=4096)
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    def record(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        path = lines[0].split(b" ")[1].decode()
        agent = ""
        for line in lines:
            if line[:8].lower() == b"x-agent:":
                agent = line[8:].strip().decode()
        self.counts[path.split("/", 2)[1]] += 1
        if self.logging:
            self.times.append(time.monotonic())
            self.log.append((agent, path))

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


class Interrupted(SystemExit):
    """A termination signal, turned into an exception so that every ``finally`` runs."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(128 + signum)


class Reaper:
    """Every child process the benchmark starts, so that none outlives it.

    Each child leads a process group of its own (``start_new_session``), so a signal meant for
    the benchmark (a terminal's Ctrl-C) does not reach the agents half-way through a phase, and
    :meth:`close` can reach a child's own children through its group. ``trioprobe run --workers``
    starts its workers in sessions of their own, so those are found through /proc as well.
    ``setpriv --pdeathsig KILL`` covers the one exit no ``finally`` sees: a ``kill -9`` of the
    benchmark (the signal is kept across exec, and sent when the forking thread, here always the
    main one, exits).
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.prefix = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []

    def spawn(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            [*self.prefix, *argv], start_new_session=True, **kwargs
        )
        self.procs.append(proc)
        return proc

    def close(self, grace: float = 10.0) -> None:
        """Resume, SIGTERM, then (after ``grace`` seconds at most) SIGKILL every child and
        every descendant still running. Signals are ignored meanwhile: a second Ctrl-C must not
        cut the clean-up short (it is bounded by ``grace``)."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        live = [p for p in self.procs if p.poll() is None]
        family = {pid for p in live for pid in descendants(p.pid)}
        if live:
            print(f"stopping {len(family)} child processes", file=sys.stderr, flush=True)
        for pid in family:
            _kill(pid, signal.SIGCONT)  # a paused (SIGSTOP) tree cannot act on SIGTERM
        for proc in live:
            _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        family |= {pid for p in live if p.poll() is None for pid in descendants(p.pid)}
        for proc in live:
            _killpg(proc.pid, signal.SIGKILL)
        for pid in family:
            _kill(pid, signal.SIGKILL)
        for proc in live:
            proc.wait()
        if live:
            print("every child process has exited", file=sys.stderr, flush=True)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _killpg(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (each thread's children: Trio starts processes from
    a worker thread)."""
    out, todo = [], [pid]
    while todo:
        here = todo.pop()
        out.append(here)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{here}/task").glob("*/children"):
                todo += [int(c) for c in task.read_text().split()]
    return out


REAPER = Reaper()


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard one (as ``trioprobe run`` does for itself), and
    say so when even that is short of ``needed``: the target server holds a connection per
    (target, agent), and past the limit asyncio stops accepting for a second at a time, so
    targets look unprobed and the figures are void."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        print(
            f"WARNING: the target server needs about {needed} file descriptors (a keep-alive "
            f"connection per target and agent or worker) but RLIMIT_NOFILE allows {soft} (hard "
            f"limit {hard}): connections past it are not accepted and their probes fail, so "
            "figures at that size are void; raise the hard limit (ulimit -Hn, LimitNOFILE=) or "
            "use fewer --targets (or a lower --ramp-max)"
        )
    else:
        print(f"file descriptors: about {needed} needed, RLIMIT_NOFILE {soft}")


def start_etcd(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.path.exists(binary):
        sys.exit("benchmarks/fleet.py: error: etcd not found (install Debian's etcd-server)")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    proc = REAPER.spawn(
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
    parser.add_argument("--workers-window", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tick-slot", type=float, default=0.0, help="the probes' tick_slot in --part workers"
    )
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--resume", type=float, default=3.0)
    parser.add_argument("--ramp-start", type=int, default=1000)
    parser.add_argument("--ramp-max", type=int, default=16000)
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run one agent without [fleet] on one agent's share of the targets",
    )
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _interrupt)
    raise_fd_limit(fds_needed(args))
    workdir = args.workdir = Path(tempfile.mkdtemp(prefix="trioprobe-fleet-bench-"))
    print(f"workdir {workdir} (pid {os.getpid()})", flush=True)
    started = time.monotonic()
    try:
        measure(args, workdir)
    finally:
        REAPER.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"took {time.monotonic() - started:.0f}s; load average at the end: "
        f"{Path('/proc/loadavg').read_text().split()[:3]}"
    )


def fds_needed(args: argparse.Namespace) -> int:
    """The target server's descriptors: a connection per (target, agent) in the fleet part; in
    the workers part the two trees keep theirs open while paused, up to the ramp's top each."""
    fleet = args.targets * args.replicas if args.part != "workers" else 0
    workers = 2 * args.ramp_max + args.cpu_targets if args.part != "fleet" else 0
    return 256 + max(fleet, workers)


def measure(args: argparse.Namespace, workdir: Path) -> None:
    server = TargetServer()
    client = start_etcd(workdir)[1] if args.part != "workers" else ""
    (workdir / "targets.txt").write_text(
        "".join(f"http://127.0.0.1:{server.port}/t/{i}\n" for i in range(args.targets))
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    print(f"load average at start: {Path('/proc/loadavg').read_text().split()[:3]}")
    if args.part in ("all", "fleet"):
        run(args, workdir, server, client, procs)
        stop_all(procs)  # the workers part measures alone
    if args.part in ("all", "workers"):
        workers_part(args, workdir, server)


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
        return REAPER.spawn(
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
    proc = REAPER.spawn(
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
tick_slot = {tick_slot}
headers = {{ "X-Agent" = "w" }}
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Tree:
    """``trioprobe run --workers N`` (N = 1: the one process), on its own targets file, paused
    (SIGSTOP) while the other configuration is measured: both start once, then take turns, so
    neither pays a start-up inside a window and both see the same minutes of the machine."""

    def __init__(
        self,
        workdir: Path,
        server: TargetServer,
        workers: int,
        count: int,
        *,
        half: bool = False,
        tick_slot: float = 0.0,
    ) -> None:
        self.workers = workers
        self.server = server
        #: One process on the targets worker 0 of 2 owns: what one worker does, without the
        #: parent and the worker's machinery (to tell a process's rate from what workers add).
        self.half = half
        self.name = "half" if half else f"w{workers}"
        self.targets = workdir / f"{self.name}.txt"
        self.count = 0
        #: The target server's CPU share (a core = 1) over the latest window.
        self.server_cpu = 0.0
        self.resize(count)
        config = workdir / f"{self.name}.toml"
        config.write_text(WORKERS_CONFIG.format(targets=self.targets.name, tick_slot=tick_slot))
        log = open(workdir / f"{self.name}.log", "wb")  # noqa: SIM115 - the child's
        argv = [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--quiet"]
        self.proc = REAPER.spawn(
            [*argv, "--workers", str(workers)], stdout=log, stderr=log, cwd=workdir
        )
        log.close()

    def resize(self, count: int) -> None:
        """Probe ``count`` targets from now on (the running process re-reads its file)."""
        port = self.server.port
        urls = [f"http://127.0.0.1:{port}/{self.name}/{i}" for i in range(count)]
        if self.half:
            from trioprobe.fleet.workers import owner_of, worker_members

            members = worker_members(2)
            urls = [u for u in urls if owner_of("web", u, members) == 0]
        self.targets.write_text("".join(f"{u}\n" for u in urls))
        self.count = len(urls)

    def pids(self) -> list[int]:
        """The parent and its workers (Trio starts processes from a worker thread, so every
        thread's children)."""
        return descendants(self.proc.pid)

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):  # exited meanwhile
                total += cpu_seconds(pid)
        return total

    def signal(self, signum: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    def probes(self) -> int:
        return self.server.counts[self.name]

    def settle(self, limit: float) -> None:
        """Until a whole second's probes came in (nearly every target probed once): bounded, so
        an overloaded size is measured (and shows as missed) all the same."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            n0 = self.probes()
            time.sleep(1)
            if self.probes() - n0 >= 0.99 * self.count:
                return

    def measure(self, window: float) -> tuple[float, float, float]:
        """(missed share, CPU seconds per probe, CPU share of a core) over ``window``."""
        me = os.getpid()
        cpu0, n0, t0 = self.cpu(), self.probes(), time.monotonic()
        own0 = cpu_seconds(me)
        time.sleep(window)
        cpu1, n1, t1 = self.cpu(), self.probes(), time.monotonic()
        self.server_cpu = (cpu_seconds(me) - own0) / (t1 - t0)
        probes = n1 - n0
        missed = max(0.0, 1 - probes / (self.count * (t1 - t0)))
        return missed, (cpu1 - cpu0) / max(1, probes), (cpu1 - cpu0) / (t1 - t0)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()


def workers_part(args: argparse.Namespace, workdir: Path, server: TargetServer) -> None:
    server.logging = False
    print(
        f"--workers 2 beside --workers 1 ({os.cpu_count()} CPUs, targets every 1 s, "
        f"tick_slot {args.tick_slot:g} s, load average {loadavg()}):"
    )
    trees = {}
    for workers in (1, 2, 0):
        # Started one at a time, each warmed up (past its first round and the GC freeze
        # after it), then paused. 0: one process on worker 0's share.
        trees[workers] = tree = Tree(
            workdir,
            server,
            max(1, workers),
            args.cpu_targets,
            half=not workers,
            tick_slot=args.tick_slot,
        )
        tree.settle(min(args.settle_limit, 30.0))
        time.sleep(args.warmup)
        tree.signal(signal.SIGSTOP)
    try:
        cpu_per_probe(args, trees)
        most = {w: ramp(args, trees[w]) for w in (1, 2)}
    finally:
        for tree in trees.values():
            tree.stop()
    scale = most[2][0] / most[1][0] if most[1][0] else float("nan")
    print(
        f"most targets at 1 s with < 1 % missed: --workers 1: {most[1][0]} (its CPU "
        f"{most[1][1] * 100:.0f} % of a core; the target server's {most[1][2] * 100:.0f} %), "
        f"--workers 2: {most[2][0]} (CPU {most[2][1] * 100:.0f} %; the target server's "
        f"{most[2][2] * 100:.0f} %): x{scale:.2f} (goal >= 1.8x: {verdict(scale >= 1.8)}; "
        f"load average {loadavg()})"
    )


def cpu_per_probe(args: argparse.Namespace, trees: dict[int, Tree]) -> None:
    """The configurations in turns (the order rotating), ``--rounds`` windows each."""
    per_probe: dict[int, list[float]] = {w: [] for w in trees}
    worst_missed = 0.0
    order = list(trees)
    for r in range(args.rounds):
        for workers in order[r % len(order) :] + order[: r % len(order)]:
            tree = trees[workers]
            tree.signal(signal.SIGCONT)
            # Resumed: the probes due meanwhile run late at once; let that pass first.
            time.sleep(args.resume)
            missed, cost, share = tree.measure(args.workers_window)
            tree.signal(signal.SIGSTOP)
            per_probe[workers].append(cost)
            worst_missed = max(worst_missed, missed)
            what = f"--workers {workers}" if workers else "one process, worker 0's share"
            print(
                f"  round {r + 1}, {what}, {tree.count} targets: {cost * 1e6:.0f} us "
                f"CPU per probe (parent and workers: {share * 100:.0f} % of a core), missed "
                f"{missed * 100:.2f} %; target server {tree.server_cpu * 100:.0f} %; load "
                f"average {loadavg()}"
            )
    medians = {w: statistics.median(v) for w, v in per_probe.items()}
    ratios = [b / a for a, b in zip(per_probe[1], per_probe[2], strict=True)]
    ratio = medians[2] / medians[1]
    print(
        f"CPU per probe at {args.cpu_targets} targets/s, medians of {args.rounds} rounds: "
        f"--workers 1 {medians[1] * 1e6:.0f} us, --workers 2 {medians[2] * 1e6:.0f} us: "
        f"ratio {ratio:.3f} (per round: {', '.join(f'{x:.2f}' for x in ratios)}; goal <= 1.10: "
        f"{verdict(ratio <= 1.10) if worst_missed < 0.01 else 'inconclusive'})"
    )
    if worst_missed >= 0.01:
        print(
            f"  INCONCLUSIVE: a window missed {worst_missed * 100:.1f} % of its probes (the "
            "machine did not keep up: timeouts and failures cost CPU of their own); run with "
            "a smaller --cpu-targets or on a quieter machine"
        )
    rate = medians[0] / medians[1]
    print(
        f"  one process on worker 0's share ({trees[0].count} targets/s, no parent, no worker "
        f"machinery): {medians[0] * 1e6:.0f} us per probe, {rate:.3f}x --workers 1's: what a "
        f"loop with half the probes per wake-up costs; --workers 2 / that: "
        f"{medians[2] / medians[0]:.3f} (what the parent and the workers' machinery add)"
    )


def ramp(args: argparse.Namespace, tree: Tree) -> tuple[int, float, float]:
    """The most targets at 1 s with < 1 % missed (doubling from ``--ramp-start``, or halving
    when that already misses, then one step between the last good and the first bad size), by
    rewriting the running process's targets file: (targets, its CPU share, the target server's
    CPU share) at that size."""
    tree.signal(signal.SIGCONT)
    good: tuple[int, float, float] = (0, 0.0, 0.0)
    bad, count = 0, args.ramp_start
    try:
        while 100 <= count <= args.ramp_max:
            missed, share, server = step(args, tree, count)
            if missed < 0.01:
                good = (count, share, server)
                if bad:
                    break
                count *= 2
            else:
                bad = count
                if good[0]:
                    break
                count //= 2
        if good[0] and bad and abs(bad - good[0]) > good[0] // 4:
            middle = (good[0] + bad) // 2
            missed, share, server = step(args, tree, middle)
            if missed < 0.01:
                good = (middle, share, server)
    finally:
        tree.signal(signal.SIGSTOP)
    return good


def step(args: argparse.Namespace, tree: Tree, count: int) -> tuple[float, float, float]:
    tree.resize(count)
    time.sleep(1.5)  # the file's poll
    tree.settle(min(args.settle_limit, 15.0))
    time.sleep(args.resume)
    missed, cost, share = tree.measure(args.workers_window)
    print(
        f"  --workers {tree.workers}, {count} targets at 1 s: missed {missed * 100:.2f} %, "
        f"{cost * 1e6:.0f} us CPU per probe ({share * 100:.0f} % of a core); the target "
        f"server took {tree.server_cpu * 100:.0f} % CPU; load average {loadavg()}"
    )
    return missed, share, tree.server_cpu


if __name__ == "__main__":
    main()
