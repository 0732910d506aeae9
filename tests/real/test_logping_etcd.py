"""The pinger against a real single-node etcd (v3 JSON gateway), in real time."""

from __future__ import annotations

import math
import shutil
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from trioprobe.logping import Entry, EtcdLog, Pinger, PingOutcome, PingStatus, quantiles
from trioprobe.logping.logs import read_with

from .services import Etcd

pytestmark = pytest.mark.real

INTERVAL = 0.1


class GatedReader:
    """Passes the etcd reader through, but can stop handing entries on (a stalled consumer)."""

    def __init__(self, log: EtcdLog) -> None:
        self.log = log
        self.gate = trio.Event()
        self.gate.set()

    def read(
        self, start_index: int
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Entry]]:
        async def feed(send: trio.MemorySendChannel[Entry]) -> None:
            async with self.log.read(start_index) as entries:
                async for entry in entries:
                    await self.gate.wait()
                    await send.send(entry)

        return read_with(feed)

    def disconnect(self) -> None:
        self.log.disconnect()


async def wait_for(what: str, predicate: object, limit: float = 30.0) -> None:
    """Poll a real service's effect; ``limit`` is a hang guard, generous for a loaded machine
    (10 s failed once in a soak run beside CPU burners and a 5,000-target benchmark)."""
    assert callable(predicate)
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - polling a real service's effect
            await trio.sleep(0.02)


async def test_pinger_on_real_etcd(etcd: Etcd) -> None:
    outcomes: list[PingOutcome] = []
    async with (
        EtcdLog(etcd.client_url, "trioprobe-test/") as appender,
        EtcdLog(etcd.client_url, "trioprobe-test/") as reader_log,
    ):
        reader = GatedReader(reader_log)
        pinger = Pinger(
            appender,
            reader,
            appender.next_index,
            ping_interval=INTERVAL,
            replay_retry_interval=0.2,
            on_ping=outcomes.append,
            # The reader is stalled on purpose below (the gate); a stall restart on a slow
            # machine would muddle the restart count. Stalls have their own tests.
            stall_pings=0,
        )
        m = pinger.metrics
        async with trio.open_nursery() as nursery:
            await nursery.start(pinger.run)

            # 1. Pings succeed (each within its interval, or it would have been aborted), and
            # the latency histogram agrees with the pings' own latencies: its p50 and p90 are
            # within a bucket (10%) of the exact ones. Neither depends on how fast this machine
            # is today; a pinger timing itself instead of the log, or a unit error, fails.
            await wait_for("20 successes", lambda: m.pings_succeeded >= 20)
            ok = sorted(o.latency for o in outcomes if o.status is PingStatus.SUCCEEDED)
            assert len(ok) == m.ping_latency.count
            assert all(0 < latency < INTERVAL for latency in ok)
            histogram = quantiles(m.ping_latency)
            for q in (0.5, 0.9):
                exact = ok[min(len(ok) - 1, math.ceil(q * len(ok)) - 1)]
                assert histogram[q] == pytest.approx(exact, rel=0.11), (q, ok)
            assert m.last_applied > 0
            assert m.restarts == 0

            # 2. Compaction past the reader's position: a restart, not a crash.
            appended = m.appends_succeeded
            reader.gate = trio.Event()  # the reader stalls; pings keep being appended
            # Entries appended during the stall fill what the stalled reader can hold: the gate
            # holds one, and the log's feeding task one watch batch it cannot hand on (a loaded
            # machine can abort pings before their appends land, hence both counts).
            await wait_for(
                "3 aborts and 3 appends",
                lambda: m.pings_aborted >= 3 and m.appends_succeeded >= appended + 3,
            )
            # Two entries past all it holds (the pinger ignores what is not a ping), compacted at
            # the second: the reader's next watch starts below the compaction, however far its
            # held batch reached. (Compacting at the newest ping raced with that batch: if it
            # ended there, the next watch started at the compaction itself, which etcd allows.)
            await appender.append(b"not a ping")
            compact_at = await appender.append(b"not a ping")
            await appender.compact(compact_at)
            reader_log.disconnect()  # the reader reconnects from a compacted revision
            reader.gate.set()
            await wait_for("a restart", lambda: m.restarts >= 1)
            succeeded = m.pings_succeeded
            await wait_for("pinging again", lambda: m.pings_succeeded >= succeeded + 5)
            assert m.last_applied >= compact_at

            # 3. etcd down: pings stop succeeding, failed appends are counted.
            await trio.to_thread.run_sync(etcd.stop)
            before = (m.pings_succeeded, m.appends_failed, m.pings_aborted + m.pings_append_failed)
            await trio.sleep(1.0)
            assert m.pings_succeeded == before[0]
            assert m.appends_failed >= before[1] + 5
            assert m.pings_aborted + m.pings_append_failed >= before[2] + 5

            # 4. etcd back: the pinger recovers by itself.
            await trio.to_thread.run_sync(etcd.start)
            await wait_for("recovery", lambda: m.pings_succeeded >= before[0] + 5, limit=60)
            nursery.cancel_scope.cancel()
    assert m.pings_started >= m.pings_succeeded + m.pings_aborted + m.pings_append_failed - 1
    assert m.restarts == 1  # the compaction; the outage is ridden out by the reader
    assert reader_log.reconnects >= 1


async def test_pinger_recovers_after_etcd_loses_its_data(etcd: Etcd) -> None:
    """etcd wiped and restarted: its revisions start again from 1, below where the reader waits.
    The first acknowledged append's index goes backwards and restarts the round (it used to time
    out every ping forever with 0 restarts)."""
    data_dir = Path(next(a for a in etcd.argv if a.startswith("--data-dir=")).split("=", 1)[1])
    async with (
        EtcdLog(etcd.client_url, "trioprobe-test/") as appender,
        EtcdLog(etcd.client_url, "trioprobe-test/") as reader_log,
    ):
        pinger = Pinger(
            appender,
            reader_log,
            appender.next_index,
            ping_interval=INTERVAL,
            replay_retry_interval=0.2,
        )
        m = pinger.metrics
        async with trio.open_nursery() as nursery:
            await nursery.start(pinger.run)
            await wait_for("20 successes", lambda: m.pings_succeeded >= 20, limit=60)
            high = m.last_applied
            assert high >= 20

            def wipe() -> None:
                etcd.stop()
                shutil.rmtree(data_dir)
                etcd.start()

            await trio.to_thread.run_sync(wipe)
            await wait_for("a rewind", lambda: m.rewinds >= 1, limit=60)
            succeeded = m.pings_succeeded
            await wait_for("pinging again", lambda: m.pings_succeeded >= succeeded + 5, limit=60)
            nursery.cancel_scope.cancel()
    assert m.restarts >= 1
    assert m.last_applied < high  # reading the new, shorter history
