"""The Pinger: measures how long an entry takes from ``append`` to coming back out of ``read``.

Port of Akutan's ``logping`` ``Pinger`` (see docs/logping.md), with Trio structure:

- ``run()`` loops: get a replay position (retried until it succeeds), set ``last_applied`` to the
  entry before it, then tail the log from there while pinging. When the reader fails with
  ``LogTruncatedError`` or another failure of the log (or its stream ends), the round's tasks are
  cancelled, ``restarts`` is counted and the loop starts again from a fresh replay position.
  ``LogClosedError`` ends ``run()``.
- Only a failure of the log is retried: :data:`TRANSIENT_ERRORS` (``LogError``, ``OSError``,
  ``httpx.HTTPError``) from the replay position, the reader or an append. Anything else (a
  ``TypeError`` in a log client, say) is a bug: it ends the round's nursery and comes out of
  ``run()`` as itself, instead of being logged and retried forever (docs/errors.md).
- One ping is in flight at a time. Pings are scheduled *start to start*: the next ping starts one
  ``ping_interval`` after the previous one started, whether or not that one came back. This is what
  the reference's code does (its docs say "after the previous read"); we keep it because it makes
  the ping rate independent of the latency being measured, and the timeout of a ping is then the
  interval: an outstanding ping is finished as *aborted* when the next one is due.
- Each append runs in a task of the round's nursery (the reference leaks it). If its ping is
  aborted while the append still has not been acknowledged, the append is cancelled and counted
  as failed, so a hung log cannot pile up appends.
- A ping succeeds when the reader returns an entry with our writer id and the current seq; the
  match is by (writer, seq), so a read that arrives before the append's acknowledgement counts.
- After every ``pings_until_disconnect`` finished pings, ``disconnect()`` is called on a reader that
  has it, so the latency is measured against different servers.
- A log that lost data (etcd restored from an older backup, or wiped) hands out indexes the reader
  has already passed, and the reader would wait forever for an index the log has not reached. So
  the round is also restarted (counted in ``restarts`` and in ``rewinds``) when an append is
  acknowledged with an index at or below one already acknowledged or read before that append
  started, and (counted in ``stalls``) when ``stall_pings`` pings in a row were appended but not
  read back while the reader returned nothing at all.

All of this is plain state changed by three tasks (ticker, reader, appends) on one Trio thread, so
the reference's event channel and mutex are unnecessary.

What the Pinger reports (``PingerMetrics``, ``PingOutcome``) is in :mod:`._metrics`, re-exported
here.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

import httpx
import trio

from .. import _groups
from .._histogram import Distribution
from .._ticks import Ticker
from ._metrics import QUANTILES as QUANTILES
from ._metrics import (
    PingerMetrics,
    PingOutcome,
    PingStatus,
    latency_distribution,
    quantiles,
)
from .encoding import WRITER_ID_LEN, decode_ping, encode_ping
from .logs import (
    Disconnector,
    Entry,
    LogAppender,
    LogClosedError,
    LogError,
    LogReader,
    LogTruncatedError,
)

__all__ = [
    "GetReplayPosition",
    "latency_distribution",
    "quantiles",
    "PingStatus",
    "PingOutcome",
    "PingerMetrics",
    "Pinger",
    "LogOrderError",
    "LogRewoundError",
    "ReaderStalledError",
    "new_writer_id",
    "TRANSIENT_ERRORS",
]

logger = logging.getLogger("trioprobe.logping")

GetReplayPosition = Callable[[], Awaitable[int]]
"""Returns the index from which reading begins. Errors are retried by the pinger."""

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (LogError, OSError, httpx.HTTPError)
"""What a log's clients raise when the log or its server fails: the pinger measures and rides
these out (counted, retried, the round restarted). ``httpx.HTTPError`` is there for a log client
built on httpx that does not wrap its errors; the logs of this package raise ``LogError``."""


class LogOrderError(LogError):
    """A reader returned an index that does not increase: the log (or its client) is broken."""


class LogRewoundError(Exception):
    """An append got an index the log had already handed out: it lost data, so the round's
    reader waits for an index the log may take long to reach again. Restarts the round."""


class ReaderStalledError(Exception):
    """Pings were appended (acknowledged) but the reader returned nothing for ``stall_pings``
    intervals in a row. Restarts the round."""


def new_writer_id() -> bytes:
    """16 random bytes from the OS's CSPRNG (never all zeros, so it cannot look unset)."""
    while True:
        writer = secrets.token_bytes(WRITER_ID_LEN)
        if any(writer):
            return writer


class Pinger:
    """Appends ping entries through ``appender`` and times their return through ``reader``.

    Use a separate reader from the appender where the log has clients (the reference always does),
    so the read path is measured independently. ``get_replay_position`` returns the index to start
    reading from; its errors are logged, counted in ``replay_errors``, handed to
    ``on_replay_error`` and retried every ``replay_retry_interval`` seconds. No ping starts until
    a replay position is known, so without that hook a log that is down from the start would
    produce no ``on_ping`` calls at all and the outage would be invisible to the caller. Rounds
    (replay + read) start at least ``restart_delay`` seconds apart, so a reader that fails at once
    cannot make the pinger spin.
    ``latency_buckets`` makes the (empty) Distribution for each latency metric; the default has
    fine 10% buckets, an exporter may want fewer. ``stall_pings`` (0: never) restarts a round
    whose reader returned nothing while that many pings in a row were appended and timed out:
    the sign of a log that lost data while no append has revealed it yet.
    """

    def __init__(
        self,
        appender: LogAppender,
        reader: LogReader,
        get_replay_position: GetReplayPosition,
        *,
        ping_interval: float = 1.0,
        pings_until_disconnect: int = 0,
        replay_retry_interval: float = 1.0,
        restart_delay: float = 0.1,
        on_ping: Callable[[PingOutcome], None] | None = None,
        on_replay_error: Callable[[Exception], None] | None = None,
        writer_id: bytes | None = None,
        latency_buckets: Callable[[], Distribution] = latency_distribution,
        stall_pings: int = 10,
    ) -> None:
        if ping_interval <= 0:
            raise ValueError(f"ping_interval must be > 0, got {ping_interval}")
        if pings_until_disconnect < 0:
            raise ValueError(f"pings_until_disconnect must be >= 0, got {pings_until_disconnect}")
        if stall_pings < 0:
            raise ValueError(f"stall_pings must be >= 0, got {stall_pings}")
        self.stall_pings = stall_pings
        self.appender = appender
        self.reader = reader
        self.get_replay_position = get_replay_position
        self.ping_interval = ping_interval
        self.pings_until_disconnect = pings_until_disconnect
        self.replay_retry_interval = replay_retry_interval
        self.restart_delay = restart_delay
        self.on_ping = on_ping
        self.on_replay_error = on_replay_error
        self.writer_id = writer_id if writer_id is not None else new_writer_id()
        self.metrics = PingerMetrics(
            ping_latency=latency_buckets(), append_latency=latency_buckets()
        )
        self.replays = 0
        self._ran = False
        # Round state (reset by _reset_round):
        self._next_seq = 1
        self._current_seq: int | None = None  # None: no ping in flight
        self._started_at = 0.0
        #: The ping alarm's schedule (made by _reset_round: it needs a running Trio).
        self._ticks: Ticker | None = None
        self._disconnect_after = pings_until_disconnect
        self._expected_index = 1
        self._appends: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        #: The highest index acknowledged to an append or read in this round.
        self._high_index = 0
        #: Whether the ping in flight's append was acknowledged.
        self._current_acked = False
        #: Pings in a row aborted although acknowledged, with no entry read meanwhile.
        self._unread_acks = 0
        #: Why the round was ended from inside (a rewind or a stall), if it was.
        self._round_error: Exception | None = None

    @property
    def last_applied(self) -> int:
        """The index of the last entry read (or the replay position - 1 before the first)."""
        return self.metrics.last_applied

    @property
    def current_seq(self) -> int | None:
        """The seq of the ping in flight, None when there is none."""
        return self._current_seq

    @property
    def next_at(self) -> float:
        """When the next ping is due (``trio.current_time()`` scale)."""
        return self._ticks.due if self._ticks is not None else 0.0

    # --- the long-running task ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ping until cancelled or the log is closed. Ready at once: an unreachable log is a
        measurement (failed appends, retried replay), not a reason to block the caller."""
        if self._ran:
            raise RuntimeError("Pinger.run() may only be called once")
        self._ran = True
        task_status.started()
        while True:
            round_start = trio.current_time()
            position = await self._replay_position()
            error = await self.run_round(position)
            if isinstance(error, LogClosedError):
                logger.info("logping: %s; stopping", error)
                return
            self.metrics.restarts += 1
            if isinstance(error, LogTruncatedError | LogRewoundError | ReaderStalledError):
                logger.warning("logping: restarting: %s", error)
            else:
                logger.error("logping: restarting after a reader error: %r", error)
            # A reader that fails at once (server down) must not make us spin.
            await trio.sleep_until(round_start + self.restart_delay)

    async def _replay_position(self) -> int:
        while True:
            try:
                position = await self.get_replay_position()
            except TRANSIENT_ERRORS as exc:
                self.metrics.replay_errors += 1
                logger.warning(
                    "logping: getting the replay position failed (retrying in %ss): %r",
                    self.replay_retry_interval,
                    exc,
                )
                if self.on_replay_error is not None:
                    self.on_replay_error(exc)
                await trio.sleep(self.replay_retry_interval)
                continue
            self.replays += 1
            return position

    async def run_round(self, position: int) -> Exception:
        """Tail from ``position`` while pinging, until the reader fails; return its error.

        Only a failure of the log (:data:`TRANSIENT_ERRORS`) is returned; any other error of the
        reader, an append or ``on_ping`` is raised, as itself, after the round's tasks stopped.
        """
        self._set_last_applied(position - 1)
        self._expected_index = position
        # Not position - 1: a replay position is where reading starts, not an index the log
        # has confirmed to this round.
        self._high_index = 0
        self._unread_acks = 0
        self._round_error = None
        error: Exception | None = None
        async with _groups.open_nursery() as nursery:
            self._reset_round(nursery)

            async def read() -> None:
                nonlocal error
                try:
                    async with self.reader.read(position) as entries:
                        async for entry in entries:
                            self.apply(entry)
                    error = LogOrderError("the log's read stream ended without an error")
                except TRANSIENT_ERRORS as exc:
                    error = exc
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            nursery.start_soon(self._ticker)
        self._end_round()
        if self._round_error is not None:
            return self._round_error
        assert error is not None
        return error

    async def _ticker(self) -> None:
        assert self._ticks is not None
        async for _ in self._ticks:
            self.tick()

    # --- the state machine (synchronous, so tests can drive it step by step) ----------------

    def _reset_round(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._current_seq = None
        self._current_acked = False
        self._ticks = Ticker(self.ping_interval)

    def _restart_round(self, error: LogRewoundError | ReaderStalledError) -> None:
        """End the round from inside (the reader is fine but waits for the wrong index)."""
        if self._round_error is not None or self._nursery is None:
            return
        self._round_error = error
        if isinstance(error, LogRewoundError):
            self.metrics.rewinds += 1
        else:
            self.metrics.stalls += 1
        self._nursery.cancel_scope.cancel()

    def _end_round(self) -> None:
        if self._current_seq is not None:
            self._finish(PingStatus.ABORTED, "the reader restarted")
        self._nursery = None
        self._appends.clear()

    def tick(self) -> None:
        """The ping alarm: abort the outstanding ping, if any, and start the next one."""
        if self._current_seq is not None:
            acked = self._current_acked
            self._finish(PingStatus.ABORTED, f"not read back within {self.ping_interval}s")
            if acked:
                self._unread_acks += 1
                if self.stall_pings and self._unread_acks >= self.stall_pings:
                    self._restart_round(
                        ReaderStalledError(
                            f"{self._unread_acks} pings in a row were appended but the reader "
                            f"returned nothing (waiting for index {self._expected_index})"
                        )
                    )
                    return
        self.start_ping()

    def start_ping(self) -> None:
        assert self._nursery is not None, "start_ping outside a round"
        seq = self._next_seq
        self._next_seq += 1
        now = trio.current_time()
        self._current_seq = seq
        self._started_at = now
        # A ping started by hand (tests drive the state machine) moves the alarm's grid too.
        assert self._ticks is not None
        self._ticks.restart()
        self.metrics.pings_started += 1
        scope = trio.CancelScope()
        self._appends[seq] = scope
        self._nursery.start_soon(self._append, seq, scope)

    async def _append(self, seq: int, scope: trio.CancelScope) -> None:
        data = encode_ping(self.writer_id, seq)
        start = trio.current_time()
        if seq == self._current_seq:
            # Time the ping from the append itself, not from when its task was spawned: the
            # scheduling hop in between is the pinger's, not the log's.
            self._started_at = start
        failure: str | None = None
        # An append that starts after the log acknowledged (or the reader saw) this index
        # must get a higher one from a log that keeps its data.
        floor = self._high_index
        try:
            with scope:
                try:
                    index = await self.appender.append(data)
                except TRANSIENT_ERRORS as exc:
                    failure = repr(exc)
                else:
                    self.metrics.appends_succeeded += 1
                    self.metrics.append_latency.add_sample(trio.current_time() - start)
                    self._acknowledged(seq, index, floor)
                    return
            if failure is None:  # our scope was cancelled: the ping was given up on
                failure = "append cancelled: its ping was aborted"
            else:
                self.metrics.append_latency.add_sample(trio.current_time() - start)
            self.metrics.appends_failed += 1
            logger.warning("logping: appending ping %d failed: %s", seq, failure)
            self.append_failed(seq, failure)
        finally:
            self._appends.pop(seq, None)

    def _acknowledged(self, seq: int, index: int, floor: int) -> None:
        if seq == self._current_seq:
            self._current_acked = True
        if index <= floor:
            self._restart_round(
                LogRewoundError(
                    f"ping {seq} was appended at index {index}, but the log had already "
                    f"reached index {floor}: it lost data (restored or wiped)"
                )
            )
        else:
            self._high_index = max(self._high_index, index)

    def append_failed(self, seq: int, error: str) -> None:
        if seq == self._current_seq:
            self._finish(PingStatus.APPEND_FAILED, error)

    def apply(self, entry: Entry) -> None:
        """Handle one entry from the reader: finish our ping if it is ours; advance last_applied."""
        if entry.index < self._expected_index:
            raise LogOrderError(
                f"the reader returned index {entry.index}, expected {self._expected_index} or later"
            )
        self._expected_index = entry.index + 1
        self._high_index = max(self._high_index, entry.index)
        self._unread_acks = 0
        # Applied before the ping is finished, so on_ping sees a last_applied that includes it.
        self._set_last_applied(entry.index)
        if self._current_seq is not None:
            ping = decode_ping(entry.data)
            if ping is not None and ping.writer == self.writer_id and ping.seq == self._current_seq:
                self._finish(PingStatus.SUCCEEDED)

    def _finish(self, status: PingStatus, error: str | None = None) -> None:
        seq = self._current_seq
        assert seq is not None, "no ping in flight"
        latency = trio.current_time() - self._started_at
        m = self.metrics
        if status is PingStatus.SUCCEEDED:
            m.pings_succeeded += 1
            m.ping_latency.add_sample(latency)
        elif status is PingStatus.ABORTED:
            m.pings_aborted += 1
            scope = self._appends.get(seq)
            if scope is not None:
                scope.cancel()
        else:
            m.pings_append_failed += 1
        self._current_seq = None
        self._current_acked = False
        if self.pings_until_disconnect and seq >= self._disconnect_after:
            self._disconnect_after += self.pings_until_disconnect
            if isinstance(self.reader, Disconnector):
                self.reader.disconnect()
                m.disconnects += 1
        if self.on_ping is not None:
            self.on_ping(PingOutcome(seq=seq, status=status, latency=latency, error=error))

    def _set_last_applied(self, index: int) -> None:
        self.metrics.last_applied = index
