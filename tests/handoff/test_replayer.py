"""WriteReplayer and RateLimiter timing, exact under MockClock (``autojump_clock``).

Timing tests use an in-memory queue: a disk queue does its I/O in worker threads, and the
autojump clock would jump while a thread works, so times would no longer be exact. One test at
the end runs the replayer over a real disk queue in real time, without timing assertions.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from trioprobe.handoff import (
    QueueFullError,
    QueueNotOpenError,
    RateLimiter,
    RecordRejected,
    ReplayerClosedError,
    WriteReplayer,
    open_queue,
)

BASE = 1_700_000_000.0


def wall() -> float:
    """A wall clock driven by the (mock) trio clock, for purge tests."""
    return BASE + trio.current_time()


class MemQueue:
    """The ReplayQueue protocol in memory: no threads, so MockClock timing is exact."""

    def __init__(self, clock: Callable[[], float] = wall) -> None:
        self.directory = "<memory>"
        self.records: deque[tuple[float, bytes]] = deque()
        self.clock = clock
        self.open = True

    def _check(self) -> None:
        if not self.open:
            raise QueueNotOpenError("memory queue is closed")

    async def append(self, data: bytes) -> None:
        self._check()
        await trio.lowlevel.checkpoint()
        self.records.append((self.clock(), data))

    async def current(self) -> bytes | None:
        self._check()
        return self.records[0][1] if self.records else None

    async def advance(self) -> bool:
        self._check()
        if not self.records:
            return False
        self.records.popleft()
        return True

    async def purge_older_than(self, when: float) -> int:
        self._check()
        n = 0
        while self.records and self.records[0][0] < when:
            self.records.popleft()
            n += 1
        return n

    def disk_usage(self) -> int:
        return sum(len(d) for _, d in self.records)


class Receiver:
    """A send callable that fails while ``down`` (or for the next ``fail_next`` calls)."""

    def __init__(self) -> None:
        self.down = False
        self.fail_next = 0
        self.attempts: list[float] = []
        self.received: list[tuple[float, bytes]] = []

    async def __call__(self, data: bytes) -> None:
        now = trio.current_time()
        self.attempts.append(now)
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise ConnectionError("receiver down")
        self.received.append((now, data))


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def wait_until(cond: Callable[[], bool], step: float = 0.001) -> None:
    # Polling is fine here: the autojump clock makes each step free.
    while not cond():  # noqa: ASYNC110
        await trio.sleep(step)


async def test_delivers_in_order_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    q, rx = MemQueue(), Receiver()
    r = WriteReplayer(q, rx)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        for i in range(20):
            await r.write(b"rec-%d" % i)
        await r.wait_drained()
        nursery.cancel_scope.cancel()
    assert [d for _, d in rx.received] == [b"rec-%d" % i for i in range(20)]
    s = r.stats()
    assert (s.queued_records, s.replayed_records) == (20, 20)
    assert s.queued_bytes == s.replayed_bytes == sum(len(b"rec-%d" % i) for i in range(20))
    assert (s.read_errors, s.replay_errors, s.queue_errors) == (0, 0, 0)


async def test_backoff_doubles_then_resets_on_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q, rx = MemQueue(), Receiver()
    r = WriteReplayer(q, rx, retry_interval=0.01, retry_max_interval=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        rx.fail_next = 5
        await r.write(b"a")
        await wait_until(lambda: len(rx.received) == 1)
        assert gaps(rx.attempts) == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16])
        assert r.replay_errors == 5
        assert r.current_retry_interval == 0.01  # reset by the success
        # The next failure series starts from retry_interval again.
        rx.attempts.clear()
        rx.fail_next = 2
        await r.write(b"b")
        await wait_until(lambda: len(rx.received) == 2)
        assert gaps(rx.attempts) == pytest.approx([0.01, 0.02])
        nursery.cancel_scope.cancel()
    assert [d for _, d in rx.received] == [b"a", b"b"]


async def test_backoff_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    q, rx = MemQueue(), Receiver()
    r = WriteReplayer(q, rx, retry_interval=1.0, retry_max_interval=4.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        rx.fail_next = 6
        await r.write(b"a")
        await wait_until(lambda: len(rx.received) == 1)
        nursery.cancel_scope.cancel()
    assert gaps(rx.attempts) == pytest.approx([1.0, 2.0, 4.0, 4.0, 4.0, 4.0])


async def test_drains_everything_at_once_when_the_receiver_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q, rx = MemQueue(), Receiver()
    r = WriteReplayer(q, rx, retry_interval=0.5, retry_max_interval=0.5)
    rx.down = True
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        for i in range(100):
            await r.write(b"%d" % i)
        await trio.sleep(3.2)
        rx.down = False
        await wait_until(lambda: len(rx.received) == 100)
        nursery.cancel_scope.cancel()
    times = [t - start for t, _ in rx.received]
    # No per-record tick: all 100 go out back to back at the first retry after recovery.
    assert min(times) == max(times) == pytest.approx(3.5)
    assert [d for _, d in rx.received] == [b"%d" % i for i in range(100)]


async def test_rate_limit_paces_exactly(autojump_clock: trio.testing.MockClock) -> None:
    q, rx = MemQueue(), Receiver()
    r = WriteReplayer(q, rx, rate_limit=1000)
    rx.down = True
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        for _ in range(10):
            await r.write(b"x" * 100)
        rx.down = False
        await wait_until(lambda: len(rx.received) == 10)
        nursery.cancel_scope.cancel()
    # 100 bytes at 1000 B/s: one record every 0.1 s, sub-second delays.
    assert gaps([t for t, _ in rx.received]) == pytest.approx([0.1] * 9)


async def test_purges_old_records_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    q, rx = MemQueue(), Receiver()
    rx.down = True
    r = WriteReplayer(
        q,
        rx,
        retry_interval=0.25,
        retry_max_interval=0.25,
        max_age=10.0,
        purge_interval=5.0,
        wall_clock=wall,
    )
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(r.run)
        await r.write(b"A")  # t=0
        await trio.sleep_until(start + 8)
        await r.write(b"B")  # t=8
        # Purges run at t=5 (cutoff -5), t=10 (cutoff 0: A is exactly max_age old, kept),
        # t=15 (cutoff 5: A goes), t=20 (cutoff 10: B goes).
        await trio.sleep_until(start + 14.9)
        assert (r.purged_records, len(q.records)) == (0, 2)
        await trio.sleep_until(start + 15.1)
        assert (r.purged_records, [d for _, d in q.records]) == (1, [b"B"])
        await trio.sleep_until(start + 19.9)
        assert r.purged_records == 1
        await trio.sleep_until(start + 20.1)
        assert (r.purged_records, len(q.records)) == (2, 0)
        nursery.cancel_scope.cancel()
    assert rx.received == []


async def test_idle_replayer_wakes_on_write(autojump_clock: trio.testing.MockClock) -> None:
    q, rx = MemQueue(), Receiver()
    r = WriteReplayer(q, rx, retry_max_interval=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        await trio.sleep(123.4)
        written = trio.current_time()
        await r.write(b"late")
        await wait_until(lambda: len(rx.received) == 1)
        nursery.cancel_scope.cancel()
    assert rx.received[0][0] == pytest.approx(written)
    # Idle is not failure: nothing was attempted before the write.
    assert rx.attempts == [rx.received[0][0]]


async def test_rejected_record_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    q = MemQueue()
    got: list[bytes] = []

    async def send(data: bytes) -> None:
        if data == b"poison":
            raise RecordRejected("400 bad line")
        got.append(data)

    r = WriteReplayer(q, send)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        for d in (b"a", b"poison", b"b"):
            await r.write(d)
        await r.wait_drained()
        nursery.cancel_scope.cancel()
    assert got == [b"a", b"b"]
    assert (r.dropped_records, r.replay_errors) == (1, 0)


async def test_a_bug_in_send_ends_run_instead_of_being_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """docs/errors.md: a ``TypeError`` in ``send`` is a bug, not an outage of the receiver. It
    ends ``run`` (and the caller's nursery) after one attempt; the record stays queued."""
    q = MemQueue()
    attempts = 0

    async def send(data: bytes) -> None:
        nonlocal attempts
        attempts += 1
        raise TypeError("a bug in send")

    r = WriteReplayer(q, send)
    await r.write(b"a")
    with (
        trio.fail_after(60),
        pytest.RaisesGroup(pytest.RaisesExc(TypeError, match="a bug"), flatten_subgroups=True),
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(r.run)
            await trio.sleep_forever()
    assert attempts == 1
    assert r.replay_errors == 0
    assert await q.current() == b"a"


async def test_transient_errors_adds_the_receivers_own_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An error type the caller declares transient is retried like ``OSError``."""

    class ReceiverSaid5xx(Exception):
        pass

    q = MemQueue()
    got: list[bytes] = []
    failures = 3

    async def send(data: bytes) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ReceiverSaid5xx("503")
        got.append(data)

    r = WriteReplayer(q, send, transient_errors=(ReceiverSaid5xx,))
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        await r.write(b"a")
        await r.wait_drained()
        nursery.cancel_scope.cancel()
    assert got == [b"a"]
    assert r.replay_errors == 3


async def test_closed_queue_ends_run_and_refuses_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q, rx = MemQueue(), Receiver()
    r = WriteReplayer(q, rx, retry_max_interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        q.open = False
        with pytest.raises(ReplayerClosedError, match="write replayer is closed"):
            await r.write(b"x")
        assert r.queue_errors == 1
    # run() returned by itself once it noticed the closed queue (no cancel needed).


async def test_wait_drained_waits_for_backlog(autojump_clock: trio.testing.MockClock) -> None:
    q, rx = MemQueue(), Receiver()
    rx.down = True
    r = WriteReplayer(q, rx, retry_interval=1.0, retry_max_interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        await r.write(b"x")
        with trio.move_on_after(5):
            await r.wait_drained()
        assert rx.received == []
        rx.down = False
        await r.wait_drained()
        assert [d for _, d in rx.received] == [b"x"]
        nursery.cancel_scope.cancel()


# -- RateLimiter -------------------------------------------------------------------------------
def test_limiter_unlimited() -> None:
    lim = RateLimiter(0, clock=lambda: 0.0)
    lim.add(10**9)
    assert lim.delay() == 0


def test_limiter_exceeded_gives_sub_second_then_capped_delay() -> None:
    now = [0.0]
    lim = RateLimiter(1000, max_delay=1.0, clock=lambda: now[0])
    lim.add(100)
    assert lim.delay() == pytest.approx(0.1)  # the reference could only say 0 or 1 s
    for _ in range(10):
        lim.add(200)  # 10 x 200 at limit 1000: the reference test expects >= 1 s
    assert lim.delay() == pytest.approx(1.0)  # capped


def test_limiter_within_limit_decays_to_zero() -> None:
    now = [0.0]
    lim = RateLimiter(1000, clock=lambda: now[0])
    for _ in range(100):  # the InfluxDB test: 50 units, delay, sleep 100 ms
        lim.add(50)
        now[0] += 0.1
    assert lim.delay() == 0


def test_limiter_idle_time_earns_at_most_burst_credit() -> None:
    now = [0.0]
    lim = RateLimiter(1000, burst=0.05, clock=lambda: now[0])
    lim.add(100)
    now[0] = 100.0  # idle for 100 s: only 50 ms (50 bytes) of credit
    lim.add(500)
    assert lim.delay() == pytest.approx(0.45)


def test_limiter_makes_up_for_late_wakeups() -> None:
    now = [0.0]
    lim = RateLimiter(1000, burst=0.01, clock=lambda: now[0])
    sent = 0
    for _ in range(1000):
        lim.add(1)
        sent += 1
        # Every sleep overshoots by 1 ms; the credit lets the next sends go without waiting.
        d = lim.delay()
        now[0] += d + 0.001 if d > 0 else 0.0
    assert sent / now[0] == pytest.approx(1000, rel=0.02)


async def test_limiter_holds_the_rate_over_10s(autojump_clock: trio.testing.MockClock) -> None:
    lim = RateLimiter(10_000)
    start = trio.current_time()
    sent = 0
    while trio.current_time() - start < 10.0:
        await lim.wait(1024)
        sent += 1024
    rate = sent / (trio.current_time() - start)
    assert rate == pytest.approx(10_000, rel=0.01)


def test_limiter_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimiter(-1)
    with pytest.raises(ValueError, match="max_delay"):
        RateLimiter(1, max_delay=0)


# -- over a real disk queue (real time, no timing assertions) ---------------------------------
async def test_replays_a_disk_queue_across_failures(tmp_path: Path) -> None:
    rx = Receiver()
    rx.fail_next = 3
    async with open_queue(tmp_path / "q", max_segment_size=4096) as q:
        r = WriteReplayer(q, rx, retry_interval=0.001, retry_max_interval=0.01)
        async with trio.open_nursery() as nursery:
            await nursery.start(r.run)
            for i in range(300):
                await r.write(b"%04d" % i + b"." * 60)
            with trio.fail_after(120):  # a hang guard, not a speed test
                await r.wait_drained()
            nursery.cancel_scope.cancel()
        assert await q.current() is None
        assert q.segment_ids() == [q.position().tail_segment]  # consumed segments were trimmed
    assert [d[:4] for _, d in rx.received] == [b"%04d" % i for i in range(300)]
    assert r.replay_errors == 3
    assert r.stats().replayed_records == 300


async def test_write_after_the_disk_queue_closed_errors(tmp_path: Path) -> None:
    rx = Receiver()
    async with open_queue(tmp_path / "q") as q:
        r = WriteReplayer(q, rx)
        async with trio.open_nursery() as nursery:
            await nursery.start(r.run)
            await r.write(b"before")
            with trio.fail_after(120):  # a hang guard, not a speed test
                await r.wait_drained()
            nursery.cancel_scope.cancel()
    with pytest.raises(ReplayerClosedError, match="write replayer is closed"):
        await r.write(b"after")
    assert r.queue_errors == 1
    assert [d for _, d in rx.received] == [b"before"]


# -- review fixes ------------------------------------------------------------------------------
class FullQueue(MemQueue):
    """A memory queue whose appends fail as if it were full."""

    async def append(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        raise QueueFullError("memory queue is full")


async def test_failed_write_does_not_stall_wait_drained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q, rx = FullQueue(), Receiver()
    r = WriteReplayer(q, rx, retry_max_interval=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        await r.wait_drained()  # the run loop is now asleep, waiting to be woken
        with pytest.raises(QueueFullError):
            await r.write(b"x")
        start = trio.current_time()
        await r.wait_drained()
        # The failed write reset "drained"; it must also wake the loop to set it again,
        # instead of leaving wait_drained to the loop's retry_max_interval timeout.
        assert trio.current_time() - start < 0.1
        assert r.queue_errors == 1
        nursery.cancel_scope.cancel()


async def test_send_failures_warn_at_start_and_then_rate_limited(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioprobe.handoff")
    q, rx = MemQueue(), Receiver()
    rx.down = True
    r = WriteReplayer(q, rx, retry_interval=1.0, retry_max_interval=10.0)

    def warnings() -> list[str]:
        return [
            rec.getMessage()
            for rec in caplog.records
            if rec.levelname == "WARNING" and "send failed" in rec.getMessage()
        ]

    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        await r.write(b"x")
        await wait_until(lambda: r.replay_errors >= 1)
        assert len(warnings()) == 1  # the first failure is a warning, not a debug line
        await trio.sleep(150)
        # ~20 failures in 150 s, but only a reminder every 60 s.
        assert r.replay_errors > 10
        assert 2 <= len(warnings()) <= 3
        assert r.consecutive_failures == r.replay_errors
        rx.down = False
        await r.wait_drained()
        assert r.consecutive_failures == 0
        assert any("works again" in rec.getMessage() for rec in caplog.records)
        rx.down = True
        before = len(warnings())
        await r.write(b"y")
        await wait_until(lambda: r.consecutive_failures >= 1)
        assert len(warnings()) == before + 1  # a new outage warns at once
        nursery.cancel_scope.cancel()


async def test_a_step_says_bytes_or_why_not_never_both() -> None:
    """A replay step returns the bytes it delivered (an int) or an _Outcome, never an int
    standing for "idle" or "failed" that could pass for a byte count."""
    from trioprobe.handoff.replayer import _Outcome

    q, rx = MemQueue(), Receiver()
    r = WriteReplayer(q, rx)
    assert await r._step() is _Outcome.IDLE
    await r.write(b"")  # an empty record: 0 bytes delivered, not a sentinel
    await r.write(b"abc")
    assert await r._step() == 0
    rx.fail_next = 1
    assert await r._step() is _Outcome.FAILED
    assert await r._step() == 3
    q.open = False
    assert await r._step() is _Outcome.CLOSED
    assert [d for _, d in rx.received] == [b"", b"abc"]
