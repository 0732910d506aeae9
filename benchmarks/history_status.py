"""The status page, API and history summary at 5,000 targets with 30 days of synthetic history.

    .venv/bin/python benchmarks/history_status.py [--targets 5000] [--db PATH] [--keep]

Builds (or reuses, with ``--db``) a store as 30 days of probing would leave it: per target 48 h
of minute rows, 30 days of hour rows and of day rows, a few incidents; then measures, in one
process as the runner would run them (the summary, then one minute's write, then the requests;
the write changes the store, so a reused one gains a minute each run):

  * the summary (uptime 1 h / 6 h / 24 h / 7 d / 30 d, p50/p99 24 h, 90 daily figures per
    target), computed in the reader thread;
  * ``/status`` (first page and a filtered one), ``/api/v1/targets``, a detail page, a target's
    24 h and 30 d history from the API and a badge: time and bytes;
  * the longest step the event loop was held for while each request was served (a ticker
    task records the largest gap between its checkpoints).

The machine may be shared (other work running): figures are wall-clock times of one run each,
the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from trioprobe.alerting import AlertRule, Health
from trioprobe.history import HistoryService, Summary, compute_summary
from trioprobe.history.service import DEFAULT_BOUNDS, DailyCache
from trioprobe.history.store import MinuteRow, Store, encode_bounds
from trioprobe.results import ProbeResult
from trioprobe.specs import HistorySpec, ProbeSpec
from trioprobe.statuspage import StatusPage

HOUR, DAY = 3600, 86400


def target_name(i: int) -> str:
    return f"http://10.{i // 65536}.{i // 256 % 256}.{i % 256}:8080/health"


def build(path: Path, targets: int, now: int) -> None:
    """The store as schema 2 leaves it: minutes for 48 h, hours and days for 30 days (the
    hours and days of the last 48 h summed from the minutes, as the writer does), 1 in 50
    targets flaky (5 % of its minutes have a failure) with one incident. Generated in SQL."""
    store = Store(path)
    c = store.write_conn
    bounds = encode_bounds((float("-inf"), *DEFAULT_BOUNDS))
    last_minute = now // 60 * 60 - 60
    first_minute = last_minute - 48 * HOUR + 60
    first_hour = (now - 30 * DAY) // HOUR * HOUR
    c.execute("BEGIN")
    c.executemany(
        "INSERT INTO target(id, probe, target, bounds) VALUES(?,?,?,?)",
        [(i + 1, "web" if i % 2 else "api", target_name(i), bounds) for i in range(targets)],
    )
    args = {"first": first_minute, "last": last_minute, "targets": targets}
    c.execute(
        """
        WITH RECURSIVE m(t) AS (SELECT :first UNION ALL SELECT t + 60 FROM m WHERE t < :last)
        INSERT INTO rollup(target_id, tier, t, probes, successes, latency_sum, hist, error)
        SELECT g.id, 0, m.t, 6, 6 - (g.id % 50 = 0 AND (m.t / 60 + g.id) % 20 = 0), 0.02,
               '{"5":4,"6":2}',
               CASE WHEN g.id % 50 = 0 AND (m.t / 60 + g.id) % 20 = 0
                    THEN 'ReadTimeout: timed out' END
        FROM target g CROSS JOIN m
        """,
        args,
    )
    # Hours and days of the last 48 h from the minutes; older ones synthetic.
    c.execute(
        """
        INSERT INTO rollup(target_id, tier, t, probes, successes, latency_sum, hist)
        SELECT target_id, 1, t / 3600 * 3600, SUM(probes), SUM(successes), SUM(latency_sum),
               '{"5":240,"6":120}' FROM rollup WHERE tier = 0 GROUP BY target_id, t / 3600
        """
    )
    c.execute(
        """
        WITH RECURSIVE h(t) AS (SELECT :fh UNION ALL SELECT t + 3600 FROM h WHERE t + 3600 < :lh)
        INSERT INTO rollup(target_id, tier, t, probes, successes, latency_sum, hist)
        SELECT g.id, 1, h.t, 360, 360 - (g.id % 50 = 0) * 3, 1.2, '{"5":240,"6":120}'
        FROM target g CROSS JOIN h
        """,
        {"fh": first_hour, "lh": first_minute // HOUR * HOUR},
    )
    c.execute(
        """
        INSERT INTO rollup(target_id, tier, t, probes, successes, latency_sum, hist)
        SELECT target_id, 2, t / 86400 * 86400, SUM(probes), SUM(successes), SUM(latency_sum),
               '{"5":5760,"6":2880}' FROM rollup WHERE tier = 1 GROUP BY target_id, t / 86400
        """
    )
    c.execute("INSERT OR REPLACE INTO meta VALUES('latest', ?)", (str(last_minute),))
    rng = random.Random(7)
    c.executemany(
        "INSERT INTO incident(target_id, start, end, reason, alert) VALUES(?,?,?,?,?)",
        [
            (tid, start, start + 600, "ReadTimeout: timed out after 1.0 s", "down")
            for tid in range(50, targets + 1, 50)
            for start in [now - rng.randrange(30 * DAY)]
        ],
    )
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def write_minute(path: Path, targets: int, now: int) -> float:
    """Seconds the writer thread takes for one minute of every target (and its hour and day
    rows): what each minute costs the store at this size."""
    store = Store(path)
    try:
        rows = [
            MinuteRow(
                "web" if i % 2 else "api",
                target_name(i),
                encode_bounds((float("-inf"), *DEFAULT_BOUNDS)),
                now // 60 * 60,
                6,
                6,
                0.02,
                {5: 4, 6: 2},
                None,
            )
            for i in range(targets)
        ]
        started = time.perf_counter()
        store.write(rows, [])
        return time.perf_counter() - started
    finally:
        store.close()


async def serve(page: StatusPage, path: str, query: bytes = b"") -> tuple[float, float, int, float]:
    """(wall seconds, loop-thread CPU seconds, body bytes, longest loop step in CPU seconds).

    CPU time of the event-loop thread (``time.thread_time``) is what the request cost the loop,
    whatever else the machine runs; a step's CPU time is what the loop was held for, without
    the time the OS gave other processes."""
    sent: list[dict[str, Any]] = []
    gaps = [0.0]
    done = False

    async def ticker() -> None:
        last = time.thread_time()
        while not done:
            await trio.lowlevel.checkpoint()
            now = time.thread_time()
            gaps[0] = max(gaps[0], now - last)
            last = now

    async def receive() -> dict[str, Any]:
        raise AssertionError("GET has no body")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "raw_path": path.encode(),
    }
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        started, cpu = time.perf_counter(), time.thread_time()
        await page(scope, receive, send)  # type: ignore[arg-type]
        took, cpu = time.perf_counter() - started, time.thread_time() - cpu
        done = True
    assert sent[0]["status"] == 200, sent
    return took, cpu, len(sent[1]["body"]), gaps[0]


async def main(args: argparse.Namespace) -> None:
    now = int(time.time())
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "bench.sqlite"
    if not db.exists():
        t0 = time.perf_counter()
        await trio.to_thread.run_sync(build, db, args.targets, now)
        print(
            f"built {db}: {db.stat().st_size / 2**20:.0f} MiB in "
            f"{time.perf_counter() - t0:.0f} s ({args.targets} targets, 30 days)"
        )
    else:
        print(f"reusing {db}: {db.stat().st_size / 2**20:.0f} MiB")
    print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    probes = [ProbeSpec(name=n, type="http", targets=("x",), slo=0.999) for n in ("api", "web")]
    service = HistoryService(HistorySpec(path=str(db)), probes)
    service._store = await trio.to_thread.run_sync(Store, db)
    # As the service does: the first summary of a day reads the bar's past days, the next ones
    # only today's (DailyCache). Wall and reader-thread CPU of each.
    cache = DailyCache()
    took = []

    def timed(store: Store) -> tuple[Summary, float, float]:
        started, cpu = time.perf_counter(), time.thread_time()
        summary = compute_summary(store, now // 60 * 60, {p.name: p for p in probes}, cache)
        return summary, time.perf_counter() - started, time.thread_time() - cpu

    for _ in range(args.summary_repeat):
        summary, wall, cpu = await service.read(timed)
        took.append((wall, cpu))
    service.summary = summary
    print(
        f"summary of {len(summary.targets)} targets (reader thread): first {took[0][0] * 1000:.0f}"
        f" ms wall / {took[0][1] * 1000:.0f} ms CPU; then "
        + ", ".join(f"{w * 1000:.0f} / {c * 1000:.0f}" for w, c in took[1:])
    )
    health = Health({"api": AlertRule("down"), "web": AlertRule("down")})
    for i in range(args.targets):
        for k in range(3):
            ok = i % 500 != 0
            health.feed(
                "web" if i % 2 else "api",
                ProbeResult(
                    target_name(i),
                    ok,
                    0.003 + k * 0.001,
                    error=None if ok else "ConnectError: refused",
                ),
            )
    page = StatusPage(health, history=service, order=["web", "api"])
    one = target_name(101).replace("/", "%2F")
    cases = [
        ("/status", b""),
        ("/status", b"state=down"),
        ("/status", b"q=10.0.1.&probe=web"),
        ("/api/v1/targets", b""),
        (f"/status/web/{one}", b""),
        (f"/api/v1/targets/web/{one}/history", b""),
        (f"/api/v1/targets/web/{one}/history", f"from={now - 30 * DAY}&step=3600".encode()),
        ("/api/v1/incidents", f"from={now - 30 * DAY}".encode()),
        (f"/badge/web/{one}/uptime-24h.svg", b""),
    ]
    took_write = await trio.to_thread.run_sync(write_minute, db, args.targets, now)
    print(
        f"one minute of {args.targets} targets written (writer thread): {took_write * 1000:.0f} ms"
    )
    print(f"{'request':<52} {'wall ms':>8} {'loop CPU ms':>12} {'KiB':>7} {'longest step ms':>16}")
    for path, query in cases:
        runs = [await serve(page, path, query) for _ in range(args.repeat)]
        ms = statistics.median(r[0] for r in runs) * 1000
        cpu = statistics.median(r[1] for r in runs) * 1000
        size = runs[0][2] / 1024
        step = statistics.median(r[3] for r in runs) * 1000
        label = (path if len(path) < 40 else path[:37] + "...") + (
            "?" + query.decode() if query else ""
        )
        print(f"{label[:52]:<52} {ms:8.1f} {cpu:12.1f} {size:7.1f} {step:16.2f}")
    await trio.to_thread.run_sync(service._store.close)
    if not args.keep and not args.db:
        for p in db.parent.iterdir():
            p.unlink()
        db.parent.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=5000)
    parser.add_argument("--db", help="a store to build once and reuse")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--summary-repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    trio.run(main, parser.parse_args())
