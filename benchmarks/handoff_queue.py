"""Handoff queue throughput beside raw Python appends and persist-queue, in the same run.

    .venv/bin/python benchmarks/handoff_queue.py [--quick] [--dir DIR]

Measures, for 1 KiB records:
  * per-record fsync: the queue (``sync="record"``) vs a raw ``write + fdatasync`` loop;
  * group commit: the queue (``sync="group"``, many concurrent appenders) vs a raw loop that
    writes 100 records per ``fdatasync``;
  * persist-queue's ``SQLiteQueue`` (auto-commit) as the off-the-shelf baseline;
  * replay reads (``current`` + ``advance``) per second;
  * opening and recovering a 100 MiB queue with every CRC checked (``verify=True``);
  * how closely a WriteReplayer holds a rate limit over 10 s.
The raw loops run inline (no thread hop); the queue does every write in ``trio.to_thread``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import trio

from trioprobe.handoff import WriteReplayer, open_queue

RECORD = 1024
FRAMED = RECORD + 16  # the queue's record header; the raw loops write the same byte count


def payload(i: int) -> bytes:
    return i.to_bytes(8, "big") * (RECORD // 8)


def rate(n: int, seconds: float) -> tuple[float, float]:
    return n / seconds, n * RECORD / seconds / 1e6


def line(label: str, n: int, seconds: float) -> float:
    rps, mbs = rate(n, seconds)
    print(f"  {label:<44} {rps:>11,.0f} rec/s {mbs:>8.1f} MB/s")
    return rps


def raw_append(path: str, n: int, every: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    rec = b"r" * FRAMED
    try:
        # Like a fresh queue segment: the file exists, with a header, durably, before timing.
        os.write(fd, b"h" * 16)
        os.fsync(fd)
        start = time.perf_counter()
        for i in range(1, n + 1):
            os.write(fd, rec)
            if i % every == 0:
                os.fdatasync(fd)
        os.fdatasync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)


async def raw_append_in_thread(path: str, n: int, every: int) -> float:
    """The raw loop under the same rule as the queue: each fsync in ``trio.to_thread``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    rec = b"r" * FRAMED
    chunk = rec * every

    def write_and_sync() -> None:
        os.write(fd, chunk)
        os.fdatasync(fd)

    try:
        os.write(fd, b"h" * 16)
        os.fsync(fd)
        start = trio.current_time()
        for _ in range(n // every):
            await trio.to_thread.run_sync(write_and_sync)
        return trio.current_time() - start
    finally:
        os.close(fd)


async def queue_append(directory: str, n: int, sync: str, tasks: int) -> float:
    async with open_queue(directory, sync=sync) as q:  # type: ignore[arg-type]
        per_task = n // tasks

        async def appender(k: int) -> None:
            for i in range(per_task):
                await q.append(payload(k * per_task + i))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for k in range(tasks):
                nursery.start_soon(appender, k)
        return trio.current_time() - start


async def queue_append_many(directory: str, n: int, per_call: int) -> float:
    async with open_queue(directory) as q:
        start = trio.current_time()
        for i in range(0, n, per_call):
            await q.append_many([payload(j) for j in range(i, i + per_call)])
        return trio.current_time() - start


def persist_queue(path: str, n: int) -> float:
    import persistqueue

    q = persistqueue.SQLiteQueue(path, auto_commit=True, multithreading=False)
    rec = payload(0)
    start = time.perf_counter()
    for _ in range(n):
        q.put(rec)
    elapsed = time.perf_counter() - start
    del q
    return elapsed


async def fill_many(directory: str, n: int) -> None:
    async with open_queue(directory) as q:
        for i in range(0, n, 1000):
            await q.append_many([payload(j) for j in range(i, min(n, i + 1000))])


async def open_and_replay(directory: str) -> tuple[float, float, int]:
    start = time.perf_counter()
    async with open_queue(directory, verify=True) as q:
        opened = time.perf_counter() - start
        n = 0
        start = time.perf_counter()
        while await q.current() is not None:
            await q.advance()
            n += 1
        replay = time.perf_counter() - start
    return opened, replay, n


async def rate_limited(directory: str, limit: int, seconds: float) -> float:
    sent = 0

    async def send(data: bytes) -> None:
        nonlocal sent
        sent += len(data)

    async with open_queue(directory) as q:
        backlog = int(limit * seconds * 1.5 / RECORD) + 10  # more than the window can drain
        for i in range(0, backlog, 1000):
            await q.append_many([payload(j) for j in range(i, i + 1000)])
        r = WriteReplayer(q, send, rate_limit=limit)
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            await nursery.start(r.run)
            await trio.sleep(seconds)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
    return sent / elapsed


def best_of_2(
    runs: dict[str, Callable[[str], float]], n: int, sub: Callable[[str], str]
) -> dict[str, float]:
    """Run each twice, in rotated order, and keep each one's best rate (records/s)."""
    best = dict.fromkeys(runs, 0.0)
    names = list(runs)
    for i in range(2):
        for name in names[i:] + names[:i]:
            path = sub(f"{name}-{i}")
            best[name] = max(best[name], n / runs[name](path))
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    return best


def ratio(label: str, ours: float, base: float, target: float | None = None) -> None:
    r = ours / base
    verdict = "" if target is None else ("  OK" if r >= target else f"  BELOW target {target}")
    print(f"  {label:<44} {r:>8.2f}x{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (< 10 s)")
    parser.add_argument("--dir", help="where to put the files (default: a temp dir)")
    args = parser.parse_args()
    quick = args.quick
    base = tempfile.mkdtemp(prefix="hh-bench-", dir=args.dir)
    sub: Callable[[str], str] = lambda name: os.path.join(base, name)  # noqa: E731
    n_each = 200 if quick else 1000
    n_group = 20_000 if quick else 50_000
    n_sqlite = 200 if quick else 1000
    replay_mib = 20 if quick else 100
    limit_seconds = 2.0 if quick else 10.0
    try:
        print(f"1 KiB records, files in {base}")
        # The disk is shared and noisy: alternate each pair twice and keep the best of each.
        print("per-record fsync (best of 2; order rotated, the disk remembers the last step):")
        each = best_of_2(
            {
                "raw": lambda d: raw_append(d, n_each, 1),
                "rawt": lambda d: trio.run(raw_append_in_thread, d, n_each, 1),
                "q1": lambda d: trio.run(queue_append, d, n_each, "record", 1),
                "q16": lambda d: trio.run(queue_append, d, n_each, "record", 16),
            },
            n_each,
            sub,
        )
        raw_each, q_each, q_each16 = each["raw"], each["q1"], each["q16"]
        raw_each_t = each["rawt"]
        line("raw write+fdatasync each, inline", n_each, n_each / raw_each)
        line("raw write+fdatasync each, in to_thread", n_each, n_each / raw_each_t)
        line("queue sync=record, 1 appender", n_each, n_each / q_each)
        line("queue sync=record, 16 appenders", n_each, n_each / q_each16)
        print("group commit (best of 2, order rotated):")
        group = best_of_2(
            {
                "raw": lambda d: raw_append(d, n_group, 100),
                "rawt": lambda d: trio.run(raw_append_in_thread, d, n_group, 100),
                "tasks": lambda d: trio.run(queue_append, d, n_group, "group", 100),
                "many": lambda d: trio.run(queue_append_many, d, n_group, 100),
            },
            n_group,
            sub,
        )
        raw_100, q_group, q_many = group["raw"], group["tasks"], group["many"]
        raw_100_t = group["rawt"]
        line("raw write, fdatasync every 100, inline", n_group, n_group / raw_100)
        line("raw 100 records+fdatasync, in to_thread", n_group, n_group / raw_100_t)
        line("queue sync=group, 100 appenders", n_group, n_group / q_group)
        line("queue append_many(100 records), 1 task", n_group, n_group / q_many)
        print("baseline:")
        sqlite = line(
            "persist-queue SQLiteQueue (auto_commit, WAL)",
            n_sqlite,
            persist_queue(sub("sqlite"), n_sqlite),
        )
        print(f"replay and recovery ({replay_mib} MiB queue):")
        n_fill = replay_mib * (1 << 20) // FRAMED
        t0 = time.perf_counter()
        trio.run(fill_many, sub("big"), n_fill)
        line("filling it (append_many, 1000 per call)", n_fill, time.perf_counter() - t0)
        opened, replay, n_read = trio.run(open_and_replay, sub("big"))
        assert n_read == n_fill, (n_read, n_fill)
        print(f"  open + recover with CRC checks (verify=True)  {opened:>8.3f} s")
        replay_rps = line("replay reads (current + advance)", n_read, replay)
        print(f"rate limit ({limit_seconds:.0f} s window):")
        limit = 2_000_000
        got = trio.run(rate_limited, sub("rl"), limit, limit_seconds)
        err = (got - limit) / limit
        print(f"  limit {limit:,} B/s, delivered {got:,.0f} B/s ({err:+.2%})")
        print("ratios:")
        print("  vs the raw loops inline (blocking the caller, as the issue's targets assume):")
        ratio("record mode, 1 appender / raw fsync-each", q_each, raw_each, 0.8)
        ratio("record mode, 16 appenders / raw fsync-each", q_each16, raw_each, 0.8)
        ratio("group commit (100 tasks) / raw fsync-every-100", q_group, raw_100, 0.6)
        ratio("append_many(100) / raw fsync-every-100", q_many, raw_100, 0.6)
        print("  vs the raw loops with each fsync in trio.to_thread (the house rule):")
        ratio("record mode, 1 appender / raw fsync-each", q_each, raw_each_t, 0.8)
        ratio("group commit (100 tasks) / raw fsync-every-100", q_group, raw_100_t, 0.6)
        ratio("append_many(100) / raw fsync-every-100", q_many, raw_100_t, 0.6)
        ratio("record mode (1 appender) / persist-queue", q_each, sqlite, 10)
        ratio("group commit / persist-queue", q_group, sqlite, 10)
        print(f"  replay reads >= 100,000 rec/s: {'OK' if replay_rps >= 100_000 else 'BELOW'}")
        scaled = opened * 100 / replay_mib
        print(
            f"  open+recover <= 1 s per 100 MiB: {'OK' if scaled <= 1 else 'BELOW'}"
            f" ({scaled:.3f} s scaled)"
        )
        print(f"  rate limit within 5%: {'OK' if abs(err) <= 0.05 else 'BELOW'}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
