"""Crash safety: SIGKILL a process appending to the queue at random points, many times.

Each child appends from several tasks (group commit, real fsync path) and consumes some records;
every other child writes in small pieces, so that kills also tear records in half;
the parent kills it after a random delay (sometimes while it is still recovering from the last
kill), all in the same directory. At the end, every acknowledged record that was not possibly
consumed must be present, intact and in order per appending task; nothing corrupt is returned.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import trio

from trioprobe.handoff import open_queue

from . import _crash_child
from ._crash_child import LANES, parse_seq, payload

KILLS = 60


def _run_child(
    ctx: multiprocessing.context.ForkServerContext, directory: str, run: int, rng: random.Random
) -> tuple[set[int], set[int], list[tuple[int, int]]]:
    reader, writer = ctx.Pipe(duplex=False)
    sync = "record" if run % 4 == 3 else "group"
    proc = ctx.Process(
        target=_crash_child.child_main,
        args=(directory, run * 10_000_000, sync, rng.randrange(2**32), run % 2 == 0, writer),
    )
    proc.start()
    writer.close()
    acked: set[int] = set()
    consumed: set[int] = set()
    recoveries: list[tuple[int, int]] = []

    def take(msg: bytes) -> None:
        if msg[:1] == b"r":
            torn, corrupt = map(int, msg[1:].split(b","))
            recoveries.append((torn, corrupt))
        else:
            (acked if msg[:1] == b"a" else consumed).add(int(msg[1:]))

    deadline = time.monotonic() + rng.uniform(0.01, 0.25)
    try:
        while (left := deadline - time.monotonic()) > 0:
            if reader.poll(left):
                try:
                    take(reader.recv_bytes())
                except EOFError:
                    break
        proc.kill()
        proc.join(10)
        # Whatever the child reported before it died is still in the pipe.
        while True:
            try:
                take(reader.recv_bytes())
            except EOFError:
                break
    finally:
        reader.close()
        proc.close()
    return acked, consumed, recoveries


def test_sigkill_during_appends_loses_nothing_acknowledged(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.handoff._crash_child"])
    rng = random.Random(20261122)
    directory = str(tmp_path / "q")
    acked: set[int] = set()
    consumed: set[int] = set()
    recoveries: list[tuple[int, int]] = []
    for run in range(KILLS):
        a, c, r = _run_child(ctx, directory, run, rng)
        acked |= a
        consumed |= c
        recoveries += r
    assert len(acked) > 1000, "the children should have acknowledged many appends"
    # A SIGKILL leaves torn tails (truncated on the next open), never corrupt middle records.
    assert all(corrupt == 0 for _, corrupt in recoveries), recoveries
    torn = sum(1 for t, _ in recoveries if t)
    print(f"{len(acked)} acked, {len(recoveries)} recoveries, {torn} truncated a torn tail")
    assert torn >= 1, "some kills should have torn a record (the piecewise writers)"

    async def read_all() -> tuple[list[bytes], int]:
        async with open_queue(directory, verify=True) as q:
            out = []
            while (data := await q.current()) is not None:
                out.append(data)
                await q.advance()
            return out, q.corrupt_records

    records, corrupt = trio.run(read_all)
    assert corrupt == 0, "no record the queue wrote may read back as corrupt"
    seqs = []
    for data in records:
        seq = parse_seq(data)
        assert data == payload(seq), f"record {seq} came back damaged"
        seqs.append(seq)
    present = set(seqs)
    missing = acked - consumed - present
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    # In order per appending task (lane): each run's lanes append increasing seqs.
    last: dict[tuple[int, int], int] = {}
    for seq in seqs:
        lane = (seq // 10_000_000, seq % LANES)
        assert seq > last.get(lane, -1), f"record {seq} out of order"
        last[lane] = seq
    # Records appear run by run (a later run never precedes an earlier one's leftovers).
    runs = [s // 10_000_000 for s in seqs]
    assert runs == sorted(runs)
