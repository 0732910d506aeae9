"""Pinger tests: a counterpart for each of the reference's tests, plus Trio-specific behaviour.

Everything runs under ``autojump_clock`` with in-memory fakes, so timings are exact.
"""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager

import pytest
import trio
import trio.lowlevel

from trioprobe.logping import (
    Entry,
    LogClosedError,
    LogTruncatedError,
    LogUnavailableError,
    MemoryLog,
    Pinger,
    PingOutcome,
    PingStatus,
    latency_distribution,
    quantiles,
    read_with,
)
from trioprobe.logping.encoding import decode_ping, encode_ping
from trioprobe.logping.logs import EntrySink
from trioprobe.logping.pinger import new_writer_id

INTERVAL = 0.1
NS = 1e-9
Entries = AbstractAsyncContextManager[trio.MemoryReceiveChannel[Entry]]


async def _never(send: EntrySink) -> None:
    """A reader that never delivers an entry."""
    await trio.sleep_forever()


class FakeLog:
    """Appender and reader over a MemoryLog, with knobs the tests turn.

    ``drop``: seqs whose append is acknowledged but whose entry is not the ping (a lost ping).
    ``fail``: seqs whose append raises. ``hold``: seqs whose append waits for ``release``.
    """

    def __init__(self) -> None:
        self.log = MemoryLog("fake")
        self.appended: list[bytes] = []
        self.drop: set[int] = set()
        self.fail: set[int] = set()
        self.hold: set[int] = set()
        self.release = trio.Event()
        self.read_starts: list[int] = []
        self.disconnects = 0

    async def append(self, data: bytes) -> int:
        self.appended.append(data)
        ping = decode_ping(data)
        seq = ping.seq if ping else 0
        if seq in self.hold:
            await self.release.wait()
        if seq in self.fail:
            raise LogUnavailableError(f"append of seq {seq} failed")
        if seq in self.drop:
            # Acknowledged, but what the reader finds at its index is not the ping.
            return self.log.append_nowait(b"lost")
        return await self.log.append(data)

    def read(self, start_index: int) -> Entries:
        self.read_starts.append(start_index)
        return self.log.read(start_index)

    def disconnect(self) -> None:
        self.disconnects += 1


def make(fake: FakeLog, **kw: object) -> tuple[Pinger, list[PingOutcome]]:
    outcomes: list[PingOutcome] = []

    async def replay() -> int:
        return await fake.log.next_index()

    pinger = Pinger(
        fake,
        fake,
        replay,
        ping_interval=INTERVAL,
        on_ping=outcomes.append,
        **kw,  # type: ignore[arg-type]
    )
    return pinger, outcomes


def test_writer_id_is_16_random_bytes() -> None:
    ids = {new_writer_id() for _ in range(10)}
    assert len(ids) == 10
    for writer in ids:
        assert len(writer) == 16
        assert any(writer)
    fake = FakeLog()
    assert len(make(fake)[0].writer_id) == 16


# --- Test_Run ------------------------------------------------------------------------------


async def test_run_returns_when_cancelled_during_replay(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeLog()
    calls = 0

    async def replay() -> int:
        nonlocal calls
        calls += 1
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    pinger = Pinger(fake, fake, replay)
    with trio.move_on_after(5) as scope:
        await pinger.run()
    assert scope.cancelled_caught
    assert calls == 1
    assert fake.read_starts == []
    assert pinger.replays == 0


class ScriptedReader:
    """Records each read's start and the pinger's last_applied at that moment, then fails."""

    def __init__(self, pinger_ref: list[Pinger], errors: list[Exception]) -> None:
        self.pinger_ref = pinger_ref
        self.errors = errors
        self.calls: list[tuple[int, int]] = []

    def read(self, start_index: int) -> Entries:
        async def feed(send: EntrySink) -> None:
            self.calls.append((start_index, self.pinger_ref[0].last_applied))
            await trio.sleep(1)
            raise self.errors.pop(0)

        return read_with(feed)


async def test_run_restarts_on_truncated_and_error_and_stops_on_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    positions = [41, 51, 61]
    replays: list[int] = []

    async def replay() -> int:
        replays.append(positions[len(replays)])
        return replays[-1]

    ref: list[Pinger] = []
    reader = ScriptedReader(
        ref, [LogTruncatedError("x", 41), LogUnavailableError("generic"), LogClosedError("x")]
    )
    pinger = Pinger(FakeLog(), reader, replay, ping_interval=10.0)
    ref.append(pinger)
    with trio.fail_after(10):
        await pinger.run()  # returns by itself on LogClosedError
    assert replays == [41, 51, 61]
    assert reader.calls == [(41, 40), (51, 50), (61, 60)]
    assert pinger.replays == 3
    assert pinger.metrics.restarts == 2
    assert pinger.last_applied == 60


async def test_a_bug_in_the_reader_ends_run_instead_of_being_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    """docs/errors.md: only a failure of the log restarts a round. A ``TypeError`` in the reader
    is a bug: it comes out of ``run()`` as itself, after one round, with no restart."""
    replays: list[int] = []

    async def replay() -> int:
        replays.append(1)
        return 1

    ref: list[Pinger] = []
    reader = ScriptedReader(ref, [TypeError("a bug in the reader"), LogClosedError("x")])
    pinger = Pinger(FakeLog(), reader, replay, ping_interval=10.0)
    ref.append(pinger)
    with trio.fail_after(10), pytest.raises(TypeError, match="a bug in the reader"):
        await pinger.run()
    assert replays == [1]
    assert len(reader.calls) == 1
    assert pinger.metrics.restarts == 0


async def test_a_bug_in_an_append_ends_run_instead_of_being_counted(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A failing append is a measurement only when the log failed; a ``TypeError`` is not."""

    class BuggyAppender:
        calls = 0

        async def append(self, data: bytes) -> int:
            self.calls += 1
            raise TypeError("a bug in the appender")

    log = MemoryLog()
    appender = BuggyAppender()
    pinger = Pinger(appender, log, log.next_index, ping_interval=INTERVAL)
    with trio.fail_after(10), pytest.raises(TypeError, match="a bug in the appender"):
        await pinger.run()
    assert appender.calls == 1
    assert pinger.metrics.appends_failed == 0
    assert pinger.metrics.restarts == 0


async def test_a_bug_in_the_replay_position_is_not_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    calls = 0

    async def replay() -> int:
        nonlocal calls
        calls += 1
        raise TypeError("a bug in replay")

    pinger = Pinger(FakeLog(), FakeLog(), replay)
    with trio.fail_after(10), pytest.raises(TypeError, match="a bug in replay"):
        await pinger.run()
    assert calls == 1
    assert pinger.metrics.replay_errors == 0


async def test_replay_position_is_retried_until_it_succeeds(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeLog()
    attempts: list[float] = []

    async def replay() -> int:
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise ConnectionError("no DiskView answered")
        return 7

    pinger = Pinger(fake, fake, replay, replay_retry_interval=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert len(attempts) == 3
    assert attempts[2] - attempts[0] == pytest.approx(4.0)
    assert pinger.metrics.replay_errors == 2
    assert fake.read_starts == [7]
    assert pinger.last_applied >= 6


async def test_each_replay_failure_is_handed_to_on_replay_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    fake = FakeLog()
    failures = 4

    async def replay() -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError(f"etcd down ({failures} left)")
        return 1

    seen: list[tuple[float, int, str]] = []
    pinger = Pinger(fake, fake, replay, replay_retry_interval=1.0)
    # The hook runs after the failure is counted, so a reporter sees the new replay_errors.
    pinger.on_replay_error = lambda exc: seen.append(
        (trio.current_time(), pinger.metrics.replay_errors, str(exc))
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert seen == [(float(t), t + 1, f"etcd down ({3 - t} left)") for t in range(4)]
    assert pinger.metrics.replay_errors == 4
    assert pinger.replays == 1


# --- Test_mainLoop -------------------------------------------------------------------------


async def test_main_loop_succeeded_aborted_append_failed(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeLog()
    fake.drop.add(2)
    fake.fail.add(3)
    pinger, outcomes = make(fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.lowlevel.checkpoint()
        t0 = trio.current_time()
        await trio.sleep(INTERVAL - 3 * NS)
        assert fake.appended == []  # nothing before the first interval
        await trio.sleep(6 * NS)  # interval + 3 ns
        assert [decode_ping(d).seq for d in fake.appended] == [1]  # type: ignore[union-attr]
        assert outcomes[0].seq == 1
        assert outcomes[0].status is PingStatus.SUCCEEDED
        assert pinger.current_seq is None
        assert pinger.next_at == pytest.approx(t0 + 2 * INTERVAL)

        await trio.sleep(INTERVAL)  # seq 2 started, never echoed
        assert pinger.current_seq == 2
        assert len(outcomes) == 1
        await trio.sleep(INTERVAL)  # seq 3 starts and aborts seq 2; seq 3's append fails
        assert [(o.seq, o.status) for o in outcomes] == [
            (1, PingStatus.SUCCEEDED),
            (2, PingStatus.ABORTED),
            (3, PingStatus.APPEND_FAILED),
        ]
        assert "seq 3 failed" in (outcomes[2].error or "")
        await trio.sleep(INTERVAL)  # another ping follows one interval later
        assert [(o.seq, o.status) for o in outcomes][3] == (4, PingStatus.SUCCEEDED)
        nursery.cancel_scope.cancel()
    m = pinger.metrics
    assert m.pings_started == 4
    assert (m.pings_succeeded, m.pings_aborted, m.pings_append_failed) == (2, 1, 1)
    assert (m.appends_succeeded, m.appends_failed) == (3, 1)
    assert m.ping_latency.count == 2
    assert m.append_latency.count == 4  # a failed append's latency is recorded too


async def test_disconnect_every_n_pings(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeLog()
    pinger, outcomes = make(fake, pings_until_disconnect=10)
    seen: list[tuple[int, int]] = []

    def on_ping(outcome: PingOutcome) -> None:
        outcomes.append(outcome)
        seen.append((outcome.seq, fake.disconnects))

    pinger.on_ping = on_ping
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(25 * INTERVAL + INTERVAL / 2)
        nursery.cancel_scope.cancel()
    assert [o.status for o in outcomes] == [PingStatus.SUCCEEDED] * 25
    assert seen == [(i, i // 10) for i in range(1, 26)]
    assert pinger.metrics.disconnects == 2


async def test_no_disconnect_without_support(autojump_clock: trio.abc.Clock) -> None:
    log = MemoryLog()

    class Reader:  # no disconnect()
        def read(self, start: int) -> Entries:
            return log.read(start)

    pinger = Pinger(log, Reader(), log.next_index, ping_interval=INTERVAL, pings_until_disconnect=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(5.5 * INTERVAL)
        nursery.cancel_scope.cancel()
    assert pinger.metrics.pings_succeeded == 5
    assert pinger.metrics.disconnects == 0


# --- Test_startPing_apply_* / Test_appendPing_error ----------------------------------------


async def test_start_ping_apply_normal(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeLog()
    pinger, outcomes = make(fake)
    async with trio.open_nursery() as nursery:
        pinger._reset_round(nursery)
        pinger.start_ping()
        assert pinger.current_seq == 1
        await trio.sleep(0.01)  # the append task runs
        assert fake.appended == [encode_ping(pinger.writer_id, 1)]
        now = trio.current_time()
        pinger.apply(Entry(1, fake.appended[0]))
        assert pinger.current_seq is None
        assert pinger.last_applied == 1
        assert [(o.seq, o.status) for o in outcomes] == [(1, PingStatus.SUCCEEDED)]
        assert outcomes[0].latency == pytest.approx(0.01)
        assert pinger.next_at == pytest.approx(now - 0.01 + INTERVAL)
    assert pinger.metrics.appends_succeeded == 1


async def test_start_ping_apply_inverted(autojump_clock: trio.abc.Clock) -> None:
    """The read comes back before the append is acknowledged: the ping still succeeds."""
    fake = FakeLog()
    fake.hold.add(1)
    pinger, outcomes = make(fake)
    async with trio.open_nursery() as nursery:
        pinger._reset_round(nursery)
        pinger.start_ping()
        await trio.sleep(0.01)
        assert pinger.metrics.appends_succeeded == 0  # still held
        pinger.apply(Entry(5, encode_ping(pinger.writer_id, 1)))
        assert pinger.current_seq is None
        assert [o.status for o in outcomes] == [PingStatus.SUCCEEDED]
        fake.release.set()
        await trio.sleep(0.01)
        assert pinger.current_seq is None
        assert pinger.metrics.appends_succeeded == 1
        assert len(outcomes) == 1


async def test_append_ping_error(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeLog()
    fake.hold.add(1)
    fake.fail.add(1)
    pinger, outcomes = make(fake)
    async with trio.open_nursery() as nursery:
        pinger._reset_round(nursery)
        pinger.start_ping()
        await trio.sleep(0.01)
        assert decode_ping(fake.appended[0]) is not None
        ping = decode_ping(fake.appended[0])
        assert ping is not None
        assert (ping.writer, ping.seq) == (pinger.writer_id, 1)
        assert pinger.current_seq == 1  # active until the failure is reported
        fake.release.set()
        await trio.sleep(0.01)
        assert pinger.current_seq is None
    assert [(o.seq, o.status) for o in outcomes] == [(1, PingStatus.APPEND_FAILED)]
    assert pinger.metrics.appends_failed == 1


async def test_others_entries_and_foreign_pings_only_advance_last_applied(
    autojump_clock: trio.abc.Clock,
) -> None:
    fake = FakeLog()
    pinger, outcomes = make(fake)
    async with trio.open_nursery() as nursery:
        pinger._reset_round(nursery)
        pinger.start_ping()
        pinger.apply(Entry(3, b"Tsome transaction"))
        pinger.apply(Entry(4, encode_ping(b"x" * 16, 1)))  # another writer's seq 1
        pinger.apply(Entry(9, encode_ping(pinger.writer_id, 2)))  # our writer, wrong seq
        assert pinger.current_seq == 1
        assert pinger.last_applied == 9
        assert outcomes == []
        nursery.cancel_scope.cancel()


# --- Trio-specific behaviour ---------------------------------------------------------------


async def test_aborted_ping_cancels_its_hung_append(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeLog()
    fake.hold.update({1, 2})  # never released
    pinger, outcomes = make(fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(3 * INTERVAL + INTERVAL / 2)  # seqs 1, 2, 3 started; 1, 2 aborted
        assert [(o.seq, o.status) for o in outcomes] == [
            (1, PingStatus.ABORTED),
            (2, PingStatus.ABORTED),
            (3, PingStatus.SUCCEEDED),
        ]
        assert pinger.metrics.appends_failed == 2  # the hung appends were cancelled and counted
        assert pinger._appends == {}  # nothing left running
        nursery.cancel_scope.cancel()


async def test_truncation_restarts_from_a_fresh_position(autojump_clock: trio.abc.Clock) -> None:
    fake = FakeLog()
    fake.drop.add(2)  # ping 2 is outstanding when the log is truncated
    pinger, outcomes = make(fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(INTERVAL * 1.5)
        fake.log.append_nowait(b"other writer")
        fake.log.append_nowait(b"other writer")
        await trio.sleep(INTERVAL * 0.6)  # ping 2 in flight
        cut = fake.log.last_index + 5
        fake.log.truncate(cut)  # everything the reader wants is gone
        await trio.lowlevel.checkpoint()
        await trio.sleep(INTERVAL * 2.5)
        nursery.cancel_scope.cancel()
    assert pinger.metrics.restarts == 1
    assert fake.read_starts[0] == 1
    assert fake.read_starts[1] == cut  # the fresh replay position
    assert (2, PingStatus.ABORTED) in [(o.seq, o.status) for o in outcomes]
    # Pinging resumes after the restart.
    assert outcomes[-1].status is PingStatus.SUCCEEDED
    assert outcomes[-1].seq > 2


async def test_out_of_order_index_restarts(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    class Backwards:
        def read(self, start: int) -> Entries:
            async def feed(send: EntrySink) -> None:
                nonlocal calls
                calls += 1
                await send.send(Entry(start + 1, b"x"))
                await send.send(Entry(start, b"y"))
                await trio.sleep_forever()

            return read_with(feed)

    async def replay() -> int:
        return 10

    pinger = Pinger(FakeLog(), Backwards(), replay, ping_interval=INTERVAL)
    with trio.move_on_after(0.95):
        await pinger.run()
    assert calls == 10  # one round per restart_delay (0.1 s), not a spin
    assert pinger.metrics.restarts in (9, 10)


async def test_pinger_on_memory_log_end_to_end(autojump_clock: trio.abc.Clock) -> None:
    log = MemoryLog()
    pinger = Pinger(log, log, log.next_index, ping_interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(10.5)
        nursery.cancel_scope.cancel()
    m = pinger.metrics
    assert m.pings_started == m.pings_succeeded == 10
    assert m.last_applied == 10
    assert m.ping_latency.count == 10
    assert m.ping_latency.percentile(0.99) <= 1e-5  # autojump: no time passes while pinging
    async with log.read(1) as entries:
        first = await entries.receive()
    assert decode_ping(first.data) is not None


async def test_closed_log_stops_the_pinger(autojump_clock: trio.abc.Clock) -> None:
    log = MemoryLog()
    pinger = Pinger(log, log, log.next_index, ping_interval=1.0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(pinger.run)
            await trio.sleep(2.5)
            log.close()
        # The nursery closed without a cancel: run() returned by itself.
    assert pinger.metrics.restarts == 0
    assert pinger.metrics.pings_succeeded == 2


def test_latency_quantiles_are_within_ten_percent() -> None:
    dist = latency_distribution()
    for i in range(1, 1001):
        dist.add_sample(i / 1000)  # 1 ms .. 1 s, uniform
    assert dist.count == 1000
    q = quantiles(dist)
    for p, value in q.items():
        assert value == pytest.approx(p, rel=0.1)
    assert math.isnan(quantiles(latency_distribution())[0.5])


def test_bad_options() -> None:
    fake = FakeLog()
    with pytest.raises(ValueError, match="ping_interval"):
        Pinger(fake, fake, fake.log.next_index, ping_interval=0)
    with pytest.raises(ValueError, match="pings_until_disconnect"):
        Pinger(fake, fake, fake.log.next_index, pings_until_disconnect=-1)


# --- a log that loses its data (issue 12, item 6) ------------------------------------------


@pytest.mark.parametrize("keep", [3, 0], ids=["restored-from-older-backup", "wiped"])
async def test_log_that_lost_data_restarts_the_round(
    autojump_clock: trio.abc.Clock, keep: int
) -> None:
    """After the log forgets its newest entries, the reader waits for an index the log has not
    reached; the next append's index going backwards restarts the round, and pinging works
    again (it used to time out forever with 0 restarts)."""
    log = MemoryLog()
    outcomes: list[PingOutcome] = []
    pinger = Pinger(log, log, log.next_index, ping_interval=1.0, on_ping=outcomes.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(5.5)  # pings 1..5 succeeded at indexes 1..5
        assert pinger.metrics.pings_succeeded == 5
        log.rewind(keep)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    m = pinger.metrics
    assert (m.restarts, m.rewinds, m.stalls) == (1, 1, 0)
    # Ping 6 was appended at index keep + 1 <= 5 and ended with the round; all later ones
    # come back from the new history.
    assert [(o.seq, o.status) for o in outcomes[5:7]] == [
        (6, PingStatus.ABORTED),
        (7, PingStatus.SUCCEEDED),
    ]
    assert all(o.status is PingStatus.SUCCEEDED for o in outcomes[6:])
    assert len(outcomes) >= 14
    assert m.last_applied == log.last_index


async def test_reader_that_returns_nothing_while_appends_succeed_restarts(
    autojump_clock: trio.abc.Clock,
) -> None:
    log = MemoryLog()
    reads: list[tuple[int, float]] = []

    class Silent:
        def read(self, start: int) -> Entries:
            reads.append((start, trio.current_time()))
            return read_with(_never)

    pinger = Pinger(log, Silent(), log.next_index, ping_interval=1.0, stall_pings=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await trio.sleep(8.5)
        nursery.cancel_scope.cancel()
    m = pinger.metrics
    # Pings at t=1, 2, 3 are acknowledged and aborted at t=2, 3, 4: the third restarts the
    # round at t=4 (new pings from t=5; the next restart is at t=8).
    assert [t for _, t in reads] == [0.0, 4.0, 8.0]
    assert [start for start, _ in reads] == [1, 4, 7]
    assert (m.restarts, m.stalls, m.rewinds) == (2, 2, 0)
    assert m.appends_succeeded == 6


async def test_stall_detection_needs_acknowledged_appends(autojump_clock: trio.abc.Clock) -> None:
    """Appends that fail are an outage (counted as such), not a stalled reader; stall_pings=0
    turns the check off."""
    fake = FakeLog()
    fake.fail.update(range(1, 100))
    pinger, _ = make(fake, stall_pings=2)
    off = MemoryLog()

    class Silent:
        def read(self, start: int) -> Entries:
            return read_with(_never)

    quiet = Pinger(off, Silent(), off.next_index, ping_interval=INTERVAL, stall_pings=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(pinger.run)
        await nursery.start(quiet.run)
        await trio.sleep(50 * INTERVAL)
        nursery.cancel_scope.cancel()
    assert pinger.metrics.pings_append_failed >= 40
    assert (pinger.metrics.restarts, pinger.metrics.stalls) == (0, 0)
    assert quiet.metrics.appends_succeeded >= 40
    assert (quiet.metrics.restarts, quiet.metrics.stalls) == (0, 0)


def test_memory_log_rewind() -> None:
    log = MemoryLog()
    for i in range(5):
        log.append_nowait(b"%d" % i)
    log.rewind(3)
    assert log.last_index == 3
    assert log.append_nowait(b"again") == 4
    log.truncate(3)
    log.rewind(1)  # below what compaction kept: empty, next index 2
    assert (log.first_index, log.last_index) == (2, 1)
    assert log.append_nowait(b"x") == 2
    with pytest.raises(ValueError, match="rewind"):
        log.rewind(-1)
