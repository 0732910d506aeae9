"""``WriteReplayer``: deliver queued records through an async ``send`` until each succeeds.

Records are written into a :class:`~trioprobe.handoff.DiskBackedQueue` and replayed in order from
its head. The head advances only after ``send`` returned, so delivery is **at least once**: a crash
(or a failure to persist the head) between a successful send and the advance means that record is
sent again. Receivers should be idempotent (InfluxDB is, for points with explicit timestamps).

Differences from the reference (metric-store's fork of InfluxDB's hinted handoff):

* it drains as fast as ``rate_limit`` allows while the receiver is up, instead of one record per
  ticker tick;
* when the queue is empty it sleeps until ``write()`` wakes it (or ``retry_max_interval`` passes,
  to notice records appended to the queue directly), instead of backing off its ticker;
* ``rate_limit`` is honoured (the fork ignores it), with sub-second delays;
* a ``send`` that raises :class:`RecordRejected` drops that record (counted), so a poison record
  cannot block the queue forever;
* purging and replaying never interleave: both hold the head lock;
* only a *transient* failure of ``send`` is retried: ``OSError``, ``trio.TooSlowError``,
  :class:`HandoffError` and the types given as ``transient_errors`` (say ``httpx.HTTPError``
  and the receiver's own error). Anything else is a bug in ``send``: it ends ``run()`` (and so
  the caller's nursery) as itself, instead of being logged and retried forever (docs/errors.md).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from .errors import HandoffError, QueueNotOpenError, RecordRejected, ReplayerClosedError
from .limiter import RateLimiter

__all__ = [
    "TRANSIENT_SEND_ERRORS",
    "ReplayQueue",
    "DEFAULT_MAX_AGE",
    "DEFAULT_PURGE_INTERVAL",
    "DEFAULT_RETRY_INTERVAL",
    "DEFAULT_RETRY_MAX_INTERVAL",
    "ReplayerStats",
    "WriteReplayer",
]

logger = logging.getLogger("trioprobe.handoff")

DEFAULT_RETRY_INTERVAL = 0.01
DEFAULT_RETRY_MAX_INTERVAL = 10.0
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_PURGE_INTERVAL = 3600.0
#: While sends keep failing, how often (seconds) a reminder warning is logged.
FAILURE_WARNING_INTERVAL = 60.0

TRANSIENT_SEND_ERRORS: tuple[type[Exception], ...] = (HandoffError, OSError, trio.TooSlowError)
"""What any ``send`` may raise for a delivery that can succeed later (the receiver is down, or
slow past the caller's ``fail_after``); the replayer keeps the record and retries it."""


class _Outcome(enum.Enum):
    """Why a replay step delivered nothing (a delivery is told by its byte count, an ``int``)."""

    #: The queue is empty.
    IDLE = enum.auto()
    #: Reading the head, sending it or advancing past it failed: retry after a backoff.
    FAILED = enum.auto()
    #: The queue was closed: the replayer's work is over.
    CLOSED = enum.auto()


class ReplayQueue(Protocol):
    """What the replayer needs of a queue (:class:`~trioprobe.handoff.DiskBackedQueue` has it).

    ``current``/``advance`` raise :class:`QueueNotOpenError` once the queue is closed.
    """

    directory: str

    async def append(self, data: bytes) -> None: ...
    async def current(self) -> bytes | None: ...
    async def advance(self) -> bool: ...
    async def purge_older_than(self, when: float) -> int: ...
    def disk_usage(self) -> int: ...


@attrs.frozen
class ReplayerStats:
    """A snapshot of a replayer's counters (the reference's ``metric_store_replayer_*``)."""

    queued_bytes: int
    queued_records: int
    replayed_bytes: int
    replayed_records: int
    disk_usage: int
    read_errors: int
    replay_errors: int
    queue_errors: int
    dropped_records: int
    purged_records: int


class WriteReplayer:
    """Queues writes durably and replays them through ``send`` in order.

    Start it with ``await nursery.start(replayer.run)``; ``write()`` works before that too (the
    records wait on disk). ``run`` returns when the queue is closed. ``transient_errors`` adds
    to :data:`TRANSIENT_SEND_ERRORS` the errors of ``send`` that mean "try again later" (an
    HTTP client's, the receiver's 5xx); any other error of ``send`` ends ``run``.
    """

    def __init__(
        self,
        queue: ReplayQueue,
        send: Callable[[bytes], Awaitable[object]],
        *,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        retry_max_interval: float = DEFAULT_RETRY_MAX_INTERVAL,
        max_age: float = DEFAULT_MAX_AGE,
        purge_interval: float = DEFAULT_PURGE_INTERVAL,
        rate_limit: float = 0,
        wall_clock: Callable[[], float] = time.time,
        transient_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        if not 0 < retry_interval <= retry_max_interval:
            raise ValueError(
                f"need 0 < retry_interval ({retry_interval}) <= "
                f"retry_max_interval ({retry_max_interval})"
            )
        if purge_interval <= 0:
            raise ValueError(f"purge_interval must be > 0 s, got {purge_interval}")
        self.queue = queue
        self._send = send
        self._transient = TRANSIENT_SEND_ERRORS + tuple(transient_errors)
        self.retry_interval = retry_interval
        self.retry_max_interval = retry_max_interval
        self.max_age = max_age
        self.purge_interval = purge_interval
        self.limiter = RateLimiter(rate_limit)
        self._wall_clock = wall_clock
        self._head_lock = trio.Lock()
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._inflight = 0
        #: The exception of the last failed send or read, for diagnostics.
        self.last_error: BaseException | None = None
        self.queued_bytes = 0
        self.queued_records = 0
        self.replayed_bytes = 0
        self.replayed_records = 0
        self.read_errors = 0
        self.replay_errors = 0
        self.queue_errors = 0
        self.dropped_records = 0
        self.purged_records = 0
        #: Failed sends since the last successful one.
        self.consecutive_failures = 0
        self._last_failure_warning = -float("inf")
        #: Delay before the next retry (doubles on each failure, reset on success).
        self.current_retry_interval = retry_interval

    @property
    def disk_usage(self) -> int:
        return self.queue.disk_usage()

    def stats(self) -> ReplayerStats:
        return ReplayerStats(
            queued_bytes=self.queued_bytes,
            queued_records=self.queued_records,
            replayed_bytes=self.replayed_bytes,
            replayed_records=self.replayed_records,
            disk_usage=self.disk_usage,
            read_errors=self.read_errors,
            replay_errors=self.replay_errors,
            queue_errors=self.queue_errors,
            dropped_records=self.dropped_records,
            purged_records=self.purged_records,
        )

    async def write(self, data: bytes) -> None:
        """Append ``data`` to the queue (durably) for replay; the run loop is woken at once."""
        self._inflight += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            await self.queue.append(data)
        except QueueNotOpenError as exc:
            self.queue_errors += 1
            raise ReplayerClosedError(
                f"write replayer is closed (queue {self.queue.directory} is not open)"
            ) from exc
        except HandoffError:
            self.queue_errors += 1
            raise
        finally:
            self._inflight -= 1
            # Also on failure: the run loop must look again to set "drained" (reset above),
            # or wait_drained() would wait for its retry_max_interval timeout.
            self._wake.set()
        self.queued_bytes += len(data)
        self.queued_records += 1

    async def wait_drained(self) -> None:
        """Return once the run loop found the queue empty with no write in flight."""
        while not self._idle.is_set():
            await self._idle.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Replay until cancelled or until the queue is closed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._purge_loop)
            task_status.started()
            await self._replay_loop()
            nursery.cancel_scope.cancel()

    async def _replay_loop(self) -> None:
        while True:
            match await self._step():
                case _Outcome.CLOSED:
                    return
                case _Outcome.IDLE:
                    if self._inflight == 0:
                        self._idle.set()
                    with trio.move_on_after(self.retry_max_interval):
                        await self._wake.wait()
                    self._wake = trio.Event()
                case _Outcome.FAILED:
                    await trio.sleep(self.current_retry_interval)
                    self.current_retry_interval = min(
                        2 * self.current_retry_interval, self.retry_max_interval
                    )
                case int(sent):
                    self.current_retry_interval = self.retry_interval
                    await self.limiter.wait(sent)

    async def _step(self) -> int | _Outcome:
        """Try to deliver the head record: the bytes delivered (or dropped), else why not."""
        async with self._head_lock:
            try:
                data = await self.queue.current()
            except QueueNotOpenError:
                return _Outcome.CLOSED
            except (HandoffError, OSError) as exc:
                self.read_errors += 1
                self.last_error = exc
                logger.warning("handoff %s: reading the head failed: %s", self.queue.directory, exc)
                return _Outcome.FAILED
            if data is None:
                return _Outcome.IDLE
            try:
                await self._send(data)
            except RecordRejected as exc:
                self.dropped_records += 1
                self.last_error = exc
                logger.warning(
                    "handoff %s: record of %d bytes rejected, dropped: %s",
                    self.queue.directory,
                    len(data),
                    exc,
                )
            except self._transient as exc:
                self.replay_errors += 1
                self.last_error = exc
                self._send_failed(exc)
                return _Outcome.FAILED
            else:
                self.replayed_bytes += len(data)
                self.replayed_records += 1
                if self.consecutive_failures:
                    logger.info(
                        "handoff %s: sending works again after %d failed attempts",
                        self.queue.directory,
                        self.consecutive_failures,
                    )
                    self.consecutive_failures = 0
            try:
                await self.queue.advance()
            except QueueNotOpenError:
                return _Outcome.CLOSED
            except (HandoffError, OSError) as exc:
                self.read_errors += 1
                self.last_error = exc
                return _Outcome.FAILED
            return len(data)

    def _send_failed(self, exc: Exception) -> None:
        # A receiver outage is worth a warning when it starts, and a reminder now and then
        # while it lasts; one line per retry (up to 100 a second) would flood the log.
        self.consecutive_failures += 1
        now = trio.current_time()
        if (
            self.consecutive_failures == 1
            or now - self._last_failure_warning >= FAILURE_WARNING_INTERVAL
        ):
            self._last_failure_warning = now
            logger.warning(
                "handoff %s: send failed (%d in a row; retrying, records stay queued): %r",
                self.queue.directory,
                self.consecutive_failures,
                exc,
            )
        else:
            logger.debug("handoff %s: send failed: %r", self.queue.directory, exc)

    async def _purge_loop(self) -> None:
        while True:
            await trio.sleep(self.purge_interval)
            async with self._head_lock:
                try:
                    purged = await self.queue.purge_older_than(self._wall_clock() - self.max_age)
                except QueueNotOpenError:
                    return
                except (HandoffError, OSError) as exc:
                    self.read_errors += 1
                    self.last_error = exc
                    logger.warning("handoff %s: purge failed: %s", self.queue.directory, exc)
                    continue
                if purged:
                    self.purged_records += purged
                    logger.info("handoff %s: purged %d old records", self.queue.directory, purged)
