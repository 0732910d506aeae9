"""Crash safety: SIGKILL a process appending to the queue at random points, many times.

Each child appends from several tasks (group commit, real fsync path) and consumes some records;
every other child writes in small pieces, so that kills also tear records in half;
the parent kills it once it has acknowledged a random number of appends, plus a random few
milliseconds (and sometimes after a random delay only, while it may still be recovering from the
last kill), all in the same directory. At the end, every acknowledged record that was not possibly
consumed must be present, intact and in order per appending task; nothing corrupt is returned.

How much gets done is bounded by progress, not by time: the kills go on until enough appends were
acknowledged and a record was torn, so a busy machine makes the test slower, never failing.
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
#: Kills go on (past KILLS) until this many appends were acknowledged ...
MIN_ACKED = 1000
#: ... and a kill tore a record; at most this many runs (a hang guard, not a verdict on speed).
MAX_RUNS = 1000
#: Seconds a child may take to reach its ack target: only a guard against a hung child.
HANG_GUARD = 60.0


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

    # Mostly: kill once `target` appends are acknowledged, then a random moment later. Now and
    # then: kill after a random delay only, so some kills land during recovery.
    timed = rng.random() < 0.15
    target = 0 if timed else rng.randrange(1, 60)
    guard = time.monotonic() + HANG_GUARD
    try:
        while len(acked) < target and (left := guard - time.monotonic()) > 0:
            if reader.poll(left):
                try:
                    take(reader.recv_bytes())
                except EOFError:
                    break
        extra = time.monotonic() + rng.uniform(0.0, 0.05 if timed else 0.01)
        while (left := extra - time.monotonic()) > 0:
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
    run = 0

    def torn_tails() -> int:
        return sum(1 for t, _ in recoveries if t)

    while run < KILLS or len(acked) < MIN_ACKED or not torn_tails():
        assert run < MAX_RUNS, f"{run} runs: {len(acked)} acked, {torn_tails()} torn tails"
        a, c, r = _run_child(ctx, directory, run, rng)
        acked |= a
        consumed |= c
        recoveries += r
        run += 1
    # A SIGKILL leaves torn tails (truncated on the next open), never corrupt middle records.
    assert all(corrupt == 0 for _, corrupt in recoveries), recoveries
    print(f"{run} runs, {len(acked)} acked, {len(recoveries)} recoveries, {torn_tails()} torn")

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
