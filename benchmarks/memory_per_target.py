"""What one target holds, by owner: tracemalloc counted, not RSS guessed (issue 19 item 2).

Run: ``.venv/bin/python benchmarks/memory_per_target.py [--small 500] [--large 2500]
[--interval 2] [--rounds 3] [--no-history] [--json]``

Two sizes of ``http`` targets against the local health endpoint of ``benchmarks/http_probe.py``
(a child process), each in a fresh interpreter, run by the Runner with the live view's observer,
a prometheus surfacer and (unless ``--no-history``) a ``[history]`` store, as ``trioprobe run``
runs them, for ``--rounds`` probe intervals and two stats exports. Then, after a full
collection, a tracemalloc snapshot (``--frames`` a trace) is grouped by **owner**: the innermost
frame of the trace that lies in a module someone owns (``OWNERS``); the shared value modules
(metrics, histogram, results) are charged to the caller that made them keep the value (the
keeper, the live view, alerting, history), and only to "metrics values" when no owner called.
The difference of the two sizes over their target counts is what one target holds, so start-up
and module imports cancel out. RSS above the same runner is printed beside it: tracemalloc sees
Python's allocations only (no allocator slack, no C library's own).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_probe import _proc_rss_mib, start_server

#: (path fragment, owner), the first match of a frame wins. Order: specific before general.
OWNERS: tuple[tuple[str, str], ...] = (
    ("trioprobe/stats.py", "stats keeper accumulators"),
    ("trioprobe/cli/_live.py", "live-view summary"),
    ("trioprobe/history/", "status history"),
    ("trioprobe/statuspage/", "status history"),
    ("trioprobe/alerting/", "alert state"),
    ("trioprobe/targets/", "target entries"),
    ("trioprobe/probes/_http_targets.py", "target entries (http, r5-lean)"),
    ("trioprobe/surfacers/", "surfacer series"),
    ("trioprobe/_lean_http.py", "connection & h11 (r5-lean)"),
    ("trioprobe/_http11.py", "connection & h11 (r5-lean)"),
    ("trioprobe/_exchange.py", "connection & h11 (r5-lean)"),
    ("trioprobe/_httpbody.py", "connection & h11 (r5-lean)"),
    ("trioprobe/_tcp.py", "connection & h11 (r5-lean)"),
    ("/h11/", "connection & h11 (r5-lean)"),
    ("/httpx/", "connection & h11 (r5-lean)"),
    ("/httpcore/", "connection & h11 (r5-lean)"),
    ("trioprobe/probes/_base.py", "per-target task/ticker (coordinator)"),
    ("trioprobe/_ticks.py", "per-target task/ticker (coordinator)"),
    ("trioprobe/runner.py", "runner (coordinator)"),
    ("trioprobe/probes/", "probe (r5-lean)"),
    ("/trio/", "trio tasks/sockets (under the probe)"),
)
#: Value modules: charged to the owner that called them (see the module doc).
SHARED = ("trioprobe/metrics.py", "trioprobe/_histogram.py", "trioprobe/results.py")


_SHARED_MARK = "metrics values (no owner called)"


def _file_owner(name: str) -> str | None:
    if any(s in name for s in SHARED):
        return _SHARED_MARK
    for fragment, owner in OWNERS:
        if fragment in name:
            return owner
    return None


def owner_of(frames: list[str], by_file: dict[str, str | None]) -> str:
    """``frames``: file names, innermost first; ``by_file``: a cache of ``_file_owner``."""
    shared = None
    for name in frames:
        if name not in by_file:
            by_file[name] = _file_owner(name)
        owner = by_file[name]
        if owner is None:
            continue
        if owner == _SHARED_MARK:
            shared = owner
        elif shared is None or not owner.startswith("trio tasks"):
            return owner  # (trio under a value module's maker: look further out)
    return shared or "other"


async def held(url: str, n: int, interval: float, rounds: int, history: bool) -> dict[str, object]:
    """Run ``n`` targets until each was probed ``rounds`` times, then count what is held."""
    from trioprobe.cli._live import LiveStats
    from trioprobe.config import parse_config
    from trioprobe.results import ProbeResult
    from trioprobe.runner import Runner

    tmp = tempfile.mkdtemp(prefix="trioprobe-mem-")
    targets = [f"{url}?t={i}" for i in range(n)]
    table = {"name": "bench", "type": "http", "targets": targets, "interval": interval}
    table["stats_interval"] = interval
    raw: dict[str, object] = {"probe": [table], "surfacer": [{"type": "prometheus", "port": 0}]}
    if history:
        raw["history"] = {"path": os.path.join(tmp, "h.sqlite")}
    config = parse_config(raw)
    live = LiveStats()
    counts: dict[str, int] = {}
    done = trio.Event()

    def observe(name: str, result: ProbeResult) -> None:
        live.observe(name, result)
        counts[result.target] = counts.get(result.target, 0) + 1
        if len(counts) == n and min(counts.values()) >= rounds:
            done.set()

    runner = Runner(config, on_result=observe, freeze_gc=True)
    live.health = runner.health
    t0 = time.monotonic()

    def note(what: str) -> None:
        print(f"  [{n} targets] {what} at {time.monotonic() - t0:.1f} s", file=sys.stderr)

    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        note("started")
        with trio.move_on_after(rounds * interval * 10 + 60):
            await done.wait()
        note(f"probed {min(counts.values(), default=0)} times")
        await trio.sleep(interval)  # one more export and status tick after the last round
        gc.unfreeze()  # what is held, not garbage the governor froze
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()  # tracing slows everything after it by several times
        rss = _proc_rss_mib()
        note("snapshot taken")
        runner.shutdown()
        nursery.cancel_scope.cancel()
    note("stopped")
    by_owner: dict[str, int] = {}
    by_line: dict[str, int] = {}
    owners: dict[object, str] = {}
    by_file: dict[str, str | None] = {}  # per distinct traceback: most traces share a few thousand
    # The raw traces (domain, size, frames innermost first, depth): Snapshot.statistics() on
    # 25-frame traces of a whole heap takes minutes; this takes seconds.
    for _, size, frames, *_ in snapshot.traces._traces:  # type: ignore[attr-defined]
        owner = owners.get(frames)
        if owner is None:
            owner = owners[frames] = owner_of([name for name, _ in frames], by_file)
        by_owner[owner] = by_owner.get(owner, 0) + size
        line = f"{_short(frames[0][0])}:{frames[0][1]} [{owner}]"
        by_line[line] = by_line.get(line, 0) + size
    note("counted")
    return {
        "targets": n,
        "probed": min(counts.values(), default=0),
        "rss_mib": rss,
        "by_owner": by_owner,
        "by_line": by_line,
    }


def _short(name: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3.11/", "lib/python3"):
        if marker in name:
            return name.split(marker, 1)[1]
    return name


def _child(url: str, n: int, args: argparse.Namespace) -> dict[str, object]:
    """``held`` in a fresh interpreter, so one size's heap does not carry into the other."""
    code = (
        "import json, sys, tracemalloc, trio; sys.path.insert(0, sys.argv[1]);"
        "tracemalloc.start(int(sys.argv[7]));"
        "from memory_per_target import held;"
        "print(json.dumps(trio.run(held, sys.argv[2], int(sys.argv[3]), float(sys.argv[4]),"
        " int(sys.argv[5]), sys.argv[6] == '1')))"
    )
    here = str(Path(__file__).resolve().parent)
    argv = [here, url, str(n), str(args.interval), str(args.rounds), "1" if args.history else "0"]
    argv.append(str(args.frames))
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def per_target(small: dict[str, object], large: dict[str, object], key: str) -> dict[str, float]:
    n = int(large["targets"]) - int(small["targets"])  # type: ignore[call-overload]
    a, b = small[key], large[key]
    assert isinstance(a, dict)
    assert isinstance(b, dict)
    out = {k: (b.get(k, 0) - a.get(k, 0)) / n for k in b.keys() | a.keys()}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2500)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-history", dest="history", action="store_false")
    parser.add_argument("--lines", type=int, default=25, help="allocating lines to show")
    parser.add_argument("--frames", type=int, default=16, help="tracemalloc frames a trace")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server, url = start_server()
    try:
        started = time.monotonic()
        small = _child(url, args.small, args)
        large = _child(url, args.large, args)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait()
    owners = per_target(small, large, "by_owner")
    lines = per_target(small, large, "by_line")
    n = args.large - args.small
    rss = (float(large["rss_mib"]) - float(small["rss_mib"])) * 1024 / n  # type: ignore[arg-type]
    if args.json:
        print(json.dumps({"owners": owners, "lines": lines, "rss_kib": rss, "small": small}))
        return
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"per target, {args.small} -> {args.large} http targets, {args.rounds} rounds at "
        f"{args.interval} s, history {'on' if args.history else 'off'} "
        f"({time.monotonic() - started:.0f} s, load {load})"
    )
    print(f"  {'owner':<42} {'bytes':>8}")
    for owner, size in owners.items():
        if abs(size) >= 8:
            print(f"  {owner:<42} {size:8.0f}")
    print(f"  {'all traced':<42} {sum(owners.values()):8.0f}")
    print(f"  {'RSS (KiB, for comparison)':<42} {rss:8.1f}")
    print(f"\n  the {args.lines} largest allocating lines (bytes per target):")
    for line, size in list(lines.items())[: args.lines]:
        print(f"  {size:8.0f}  {line}")


if __name__ == "__main__":
    main()
