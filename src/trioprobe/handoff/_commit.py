"""Group commit for the handoff queue: pending appends, the one write in flight, the batching.

Why a state machine and not a writer task: the queue needs no nursery, and the write of the next
batch must start in the same event-loop step that learns the previous one is durable. When the
loop hands that job to a task instead (the first appender of the next batch takes the lead), the
tasks the finished batch just woke all run before the next write starts, so their task switches
and the fsync add up instead of overlapping. Here the worker thread's completion is delivered by
``run_sync_soon`` straight to :meth:`GroupCommit._written`, which acknowledges the batch and, if
a full batch is waiting, starts its write at once (one thread hop per batch, in
``trio.lowlevel.start_thread_soon``).

The batching policy (:meth:`GroupCommit._cap`): by default every pending append joins the next
write, after one scheduler pass in which the runnable ones can still add theirs (the leader's
*gather*). With many concurrent appenders (``2 * SPLIT_MIN`` or more) a batch may instead take at
most half of them, so they settle into two groups that take turns: one group's records are being
fsynced while the other group's tasks are woken and append again. That pays when the appenders'
task switches cost more than an fsync's fixed part (a fast disk) and loses when the disk is slow
(twice the fsyncs for the same records), so :class:`SplitChooser` measures records acknowledged
per second in both modes and keeps the faster. Either way each record waits for its own fsync.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Final

import attrs
import outcome
import trio

__all__ = ["SPLIT_MIN", "BatchProgress", "GroupCommit", "Pending", "SplitChooser", "Stage"]

logger = logging.getLogger("trioprobe.handoff")

#: Below twice this many concurrent appenders a batch always takes every pending append: 16
#: task steps (~5-10 us each) cost less than one fsync's fixed part, so overlapping them with
#: the disk cannot pay for the second fsync.
SPLIT_MIN: Final = 16
#: Batches per measurement window of :class:`SplitChooser`.
WINDOW: Final = 32
#: Every this many windows the chooser tries the other mode again (conditions change).
EXPLORE_EVERY: Final = 8


class Stage(enum.Enum):
    """Where an append's records are in the group commit."""

    #: In the pending list; no write has them yet (a cancelled append withdraws them).
    WAITING = enum.auto()
    #: Taken into the write in flight: their fate is that batch's.
    WRITING = enum.auto()
    #: Written (or failed, see ``error``) and the appender may return.
    DONE = enum.auto()


class Pending:
    """One append call's encoded records and the task waiting for them."""

    __slots__ = ("error", "owner", "records", "size", "stage", "task")

    def __init__(self, records: list[bytes], size: int) -> None:
        #: Encoded records, written contiguously and in order.
        self.records = records
        self.size = size
        self.stage = Stage.WAITING
        self.error: BaseException | None = None
        #: The appending task while it is parked: woken when the records are done, or when it
        #: should lead the next write. (Cheaper than an Event; this runs once per append.)
        self.task: trio.lowlevel.Task | None = None
        #: The group commit it was given to (set by :meth:`GroupCommit.commit`).
        self.owner: GroupCommit | None = None

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        """The abort function of the parked appender: the Pending itself, so parking
        allocates nothing (a ``partial`` per record was measurable with 100 appenders)."""
        assert self.owner is not None
        return self.owner._abort(self, None)

    def wake(self) -> bool:
        """Reschedule the parked task; False if none is parked (it left, or is running)."""
        task, self.task = self.task, None
        if task is None:
            return False
        trio.lowlevel.reschedule(task)
        return True


@attrs.define
class BatchProgress:
    """What a write batch changed; filled in by the worker thread, applied by the event loop."""

    #: (segment id, durable size) of every segment the batch wrote to, in order.
    sizes: list[tuple[int, int]] = attrs.Factory(list)
    created: list[int] = attrs.Factory(list)
    #: How many of the batch's records (a prefix) are fsynced.
    written: int = 0


#: Worker thread: write and fsync these records, noting progress as each chunk is durable.
WriteBatch = Callable[[list[bytes], BatchProgress], None]
#: Event loop: a batch's progress is known (applied even when the write failed part-way).
ApplyProgress = Callable[[BatchProgress], None]
#: Event loop: the error one append gets when its batch failed (exception, stored, total).
MakeError = Callable[[BaseException, int, int], BaseException]
#: Event loop, after each write: whether it woke any appender (the queue's late close uses it).
AfterWrite = Callable[[bool], None]


class SplitChooser:
    """Chooses between one batch per round and two alternating groups, by measurement.

    It counts records acknowledged per second over windows of :data:`WINDOW` batches (only
    while enough appenders are concurrent for the choice to matter), keeps the faster mode, and
    tries the other one window in :data:`EXPLORE_EVERY`, since the disk's speed and the load
    change. A wrong try costs at most one window's throughput difference.
    """

    __slots__ = ("_batches", "_records", "_start", "_windows", "rates", "split")

    def __init__(self) -> None:
        self.split = False
        #: Last measured rate of each mode (records/s; 0 until measured).
        self.rates = {False: 0.0, True: 0.0}
        self._batches = 0
        self._records = 0
        self._start = 0.0
        self._windows = 0

    def written(self, records: int, concurrent: bool) -> None:
        """Count one acknowledged batch of ``records``; ``concurrent``: whether it counts."""
        now = time.perf_counter()
        if not concurrent or self._batches == 0:
            # (Re)start the window: the first batch's wait began before the window did.
            self._batches, self._records, self._start = int(concurrent), 0, now
            return
        self._batches += 1
        self._records += records
        if self._batches <= WINDOW:
            return
        self.rates[self.split] = self._records / max(now - self._start, 1e-9)
        self._windows += 1
        other = not self.split
        if not self.rates[other] or self._windows % EXPLORE_EVERY == 0:
            self.split = other
        else:
            self.split = self.rates[True] > self.rates[False]
        self._batches, self._records, self._start = 1, 0, now


class GroupCommit:
    """The pending appends of one queue and the write in flight (at most one at a time).

    Event-loop state only, touched by appending tasks and by :meth:`_written` (a
    ``run_sync_soon`` callback, so never concurrently). The worker thread sees only its batch's
    records and its ``BatchProgress``.
    """

    def __init__(
        self, write: WriteBatch, apply: ApplyProgress, make_error: MakeError, after: AfterWrite
    ) -> None:
        self._write = write
        self._apply = apply
        self._make_error = make_error
        self._after = after
        self._token: trio.lowlevel.TrioToken | None = None
        self.pending: list[Pending] = []
        #: The batch being written, or None.
        self.inflight: list[Pending] | None = None
        #: Bytes of the records pending or in flight (they count against the size bound).
        self.reserved = 0
        #: Append calls not yet returned (the batching policy's measure of concurrency).
        self._appenders = 0
        #: An appender is in its gather pass and will start the write.
        self._leading = False
        #: Held by close and the segment roll of purge: no write may start meanwhile.
        self._paused = 0
        #: Where pausers wait for the write in flight to finish.
        self._idle = trio.lowlevel.ParkingLot()
        #: Set while no new write may start (the queue is closing or closed).
        self.closed = False
        self.chooser = SplitChooser()

    # -- the appender's side -------------------------------------------------------------------
    async def commit(self, p: Pending) -> None:
        """Queue ``p`` and return once its batch is written (``p.error`` says how it went).

        Cancelled while waiting, ``p`` is withdrawn (never written); cancelled while its batch
        is being written, the call returns at once and the records may or may not be stored.
        """
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        p.owner = self
        self.pending.append(p)
        self.reserved += p.size
        self._appenders += 1
        try:
            while p.stage is not Stage.DONE:
                if self.inflight is None and not (self._leading or self._paused or self.closed):
                    await self._lead()
                else:
                    # Parked here, not in a helper coroutine: this runs once per append.
                    p.task = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(p)
        finally:
            self._appenders -= 1

    async def _lead(self) -> None:
        self._leading = True
        try:
            # Let tasks that are runnable right now (e.g. the ones the last batch woke) add
            # their records first, so they share this fsync.
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._leading = False
        self.start()

    def _abort(self, p: Pending, _: object) -> trio.lowlevel.Abort:
        p.task = None
        if p.stage is Stage.WAITING:
            # Withdrawn now, not when the task next runs: a write starting meanwhile must not
            # take records whose caller is gone, nor pick it to lead.
            self.pending.remove(p)
            self.reserved -= p.size
        return trio.lowlevel.Abort.SUCCEEDED

    # -- starting and finishing writes ---------------------------------------------------------
    def _cap(self) -> int:
        """Most appends the next batch takes (see the module doc)."""
        n = self._appenders
        if n >= 2 * SPLIT_MIN and self.chooser.split:
            return (n + 1) // 2
        return n

    def start(self) -> None:
        """Start writing the next batch, unless a write is in flight or writes are held."""
        if self.inflight is not None or self._paused or self.closed or not self.pending:
            return
        assert self._token is not None
        cap = self._cap()
        batch = self.pending
        if len(batch) > cap:
            batch, self.pending = batch[:cap], batch[cap:]
        else:
            self.pending = []
        for p in batch:
            p.stage = Stage.WRITING
        self.inflight = batch
        progress = BatchProgress()
        records = [r for p in batch for r in p.records]
        token = self._token

        def deliver(result: outcome.Outcome[None]) -> None:
            # If the event loop is gone, so is everyone who waited.
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(self._written, batch, progress, result)

        trio.lowlevel.start_thread_soon(partial(self._write, records, progress), deliver)

    def _written(
        self, batch: list[Pending], progress: BatchProgress, result: outcome.Outcome[None]
    ) -> None:
        """Event loop: acknowledge the batch, then start the next write (see the module doc)."""
        self.inflight = None
        self.chooser.written(len(batch), self._appenders >= 2 * SPLIT_MIN)
        failure = result.error if isinstance(result, outcome.Error) else None
        if failure is not None and not isinstance(failure, OSError):
            logger.error("handoff queue: write failed unexpectedly", exc_info=failure)
        self._apply(progress)
        # Records fsynced before a failure (earlier chunks, e.g. before a roll) are durable
        # and will be delivered: their appends succeed; the rest get an error that says how
        # many of that call's records were stored.
        woke = False
        done = Stage.DONE
        if failure is None:
            for p in batch:  # the common case, once per append: kept short
                self.reserved -= p.size
                p.stage = done
                woke = p.wake() or woke
        else:
            durable = progress.written
            for p in batch:
                stored = min(durable, len(p.records))
                durable -= stored
                self.reserved -= p.size
                p.stage = done
                if stored < len(p.records):
                    p.error = self._make_error(failure, stored, len(p.records))
                woke = p.wake() or woke
        self._after(woke)
        if self._paused:
            self._idle.unpark_all()
        elif self.pending and (len(self.pending) >= self._cap() or not self.pending[0].wake()):
            # A full group waits: write it now, while the tasks just woken run. Otherwise the
            # oldest waiter was woken to lead, after a pass in which others may join.
            self.start()

    def fail_pending(self, error: Callable[[], BaseException]) -> None:
        """Close: no write starts any more; appends not yet taken fail with ``error()``."""
        self.closed = True
        for p in self.pending:
            p.stage = Stage.DONE
            p.error = error()
            self.reserved -= p.size
            p.wake()
        self.pending.clear()

    @property
    def busy(self) -> bool:
        """Whether a write is in flight or something holds writes."""
        return self.inflight is not None or self._paused > 0

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Hold new writes and wait for the one in flight: the files are the caller's inside.

        Callers must serialise among themselves (the queue's ``_write_lock``).
        """
        self._paused += 1
        try:
            while self.inflight is not None:
                await self._idle.park()
            yield
        finally:
            self._paused -= 1
            if not self._paused:
                self.start()
