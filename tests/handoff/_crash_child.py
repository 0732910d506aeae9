"""The child process of the crash test: appends (and consumes) until it is SIGKILLed.

It reports through a pipe, flushed by each write: ``a<seq>`` once an append of ``seq`` has
returned (so it is acknowledged), ``c<seq>`` when it is about to advance past ``seq`` (so that
record may legitimately be gone after a crash), and once ``r<torn tails>,<corrupt records>`` from
its recovery report.
"""

from __future__ import annotations

import os
import random
import time
from multiprocessing.connection import Connection
from typing import Literal

import trio

from trioprobe.handoff import disk_queue as queue_mod
from trioprobe.handoff import open_queue

LANES = 4


def payload(seq: int) -> bytes:
    """Deterministic content, so the parent can tell an intact record from a damaged one."""
    body = bytes((seq * 31 + i) % 251 for i in range(seq % 200 + 20))
    return b"%d|" % seq + body


def parse_seq(data: bytes) -> int:
    return int(data.split(b"|", 1)[0])


def _write_in_pieces(fd: int, data: bytes) -> None:
    """Many small writes, so a SIGKILL can land inside a record (as a power cut can)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:61]) :]
        time.sleep(0.0001)  # (a worker thread) so that most kills land mid-write


def child_main(
    directory: str,
    start: int,
    sync: Literal["group", "record"],
    seed: int,
    torn: bool,
    conn: Connection,
) -> None:
    rng = random.Random(seed)
    if torn:
        queue_mod._write_all = _write_in_pieces

    async def main() -> None:
        async with open_queue(
            directory,
            max_segment_size=8192,
            sync=sync,
            head_sync_records=8,
        ) as q:
            rec = q.recovery
            conn.send_bytes(b"r%d,%d" % (len(rec.truncated), rec.corrupt_records))

            async def appender(lane: int) -> None:
                seq = start + lane
                while True:
                    await q.append(payload(seq))
                    conn.send_bytes(b"a%d" % seq)
                    seq += LANES

            async def consumer() -> None:
                while True:
                    data = await q.current()
                    if data is None or rng.random() < 0.3:
                        await trio.sleep(0.001)
                        continue
                    conn.send_bytes(b"c%d" % parse_seq(data))
                    await q.advance()

            async with trio.open_nursery() as nursery:
                for lane in range(LANES):
                    nursery.start_soon(appender, lane)
                nursery.start_soon(consumer)

    trio.run(main)
