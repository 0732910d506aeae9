"""The ``logping`` probe type: continuously ping a log with a ``trioprobe.logping.Pinger``.

Each target is a log spec: ``"memory"``, ``"file:PATH"`` or ``"etcd:http://HOST:PORT"`` (when the
probe lists no targets, ``Options.log`` is pinged, but the stats keeper only exports listed
targets, so list the log as the target). One pinger runs per target, started and stopped as the
target list changes.

Every finished ping becomes a ``ProbeResult`` (target = the log spec, which is also the log's
name): success with the append-to-read latency, or a failure whose ``error`` says why; an aborted
ping (not read back before the next was due) is a ``timeout``. Each failed attempt to get the
replay position is a failed result too (``error`` says why), so a log that is down when pinging
starts is visible even though no ping can start. The pinger's other counters ride along as
``extras`` holding the *change* since the previous result, so the keeper's sums are the pinger's
totals: ``appends_succeeded``, ``appends_failed``, ``disconnects``, ``restarts``, ``rewinds``,
``stalls``, ``replay_errors``, ``results_dropped`` and ``append_latency`` (a Distribution in
seconds, buckets from 10 µs doubling). ``last_applied`` is a gauge. When the results buffer is
full a result is dropped, not waited for; the next one sent carries the dropped ones' counter
changes, and ``results_dropped`` counts them.

The ping schedule is the pinger's own (``ping_interval``, default the probe's ``interval``): a ping
that is not read back within one interval is aborted, so the probe's ``timeout`` is not used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio

from ..failures import Failure, FailureReason, Phase, classify
from ..logping import Pinger, PingOutcome, PingStatus, open_log
from ..logping.logs import check_log_spec
from ..logping.pinger import PingerMetrics
from ..metrics import Distribution
from ..results import ProbeResult
from . import TargetsFn
from ._base import follow_targets

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["LogPingProbe", "Options", "make_probe"]

logger = logging.getLogger("trioprobe.probes.logping")


def export_buckets() -> Distribution:
    """Latency buckets for export: 10 µs doubling up to ~20 s, 23 buckets; every surfacer
    (Prometheus, lines, InfluxDB) carries each bucket, so fewer than the pinger's default."""
    return Distribution.exponential(base=2.0, scale=1e-5, count=21)


_COUNTERS = (
    "appends_succeeded",
    "appends_failed",
    "disconnects",
    "restarts",
    "rewinds",
    "stalls",
    "replay_errors",
)


def _check_log(_: object, __: object, value: str) -> None:
    check_log_spec(value)


@attrs.frozen
class Options:
    """Config keys of a ``logping`` probe."""

    #: The log to ping when the probe has no targets: "memory", "file:PATH" or "etcd:URL".
    log: str = attrs.field(default="memory", validator=_check_log)
    #: Seconds between ping starts; also each ping's timeout. Default: the probe's interval.
    ping_interval: float | None = None
    #: Disconnect the reader after this many pings (0: never), to spread reads over servers.
    pings_until_disconnect: int = 0
    #: Key prefix of an etcd log.
    prefix: str = "trioprobe/logping/"
    #: fsync each append of a file log.
    fsync: bool = True
    #: Seconds between attempts to get the replay position.
    replay_retry_interval: float = 1.0
    #: Finished pings buffered for the results channel before they are dropped (and counted).
    buffer: int = 256

    def __attrs_post_init__(self) -> None:
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ValueError(f"ping_interval must be > 0, got {self.ping_interval}")
        if self.pings_until_disconnect < 0:
            raise ValueError("pings_until_disconnect must be >= 0")


class _Reporter:
    """Turns one pinger's outcomes into ProbeResults carrying counter deltas.

    Pinging must never wait for a slow consumer, so a result that does not fit in the buffer is
    dropped. Its deltas are not: the baselines advance only when a result is sent, so the next
    result that gets through carries everything since the last one sent, plus
    ``results_dropped`` (the number dropped in between), and the keeper's sums stay the pinger's
    totals. The warning about it is logged at most once per ``WARN_INTERVAL`` seconds, so an
    overloaded consumer does not also flood the log.
    """

    WARN_INTERVAL = 10.0

    def __init__(
        self, target: str, metrics: PingerMetrics, send: trio.MemorySendChannel[ProbeResult]
    ):
        self.target = target
        self.metrics = metrics
        self.send = send
        self.last = dict.fromkeys(_COUNTERS, 0)
        self.last_append: Distribution = export_buckets()
        #: Results dropped so far, and how many of those were already exported.
        self.dropped = 0
        self.dropped_sent = 0
        self._warned_at: float | None = None

    def __call__(self, outcome: PingOutcome) -> None:
        succeeded = outcome.status is PingStatus.SUCCEEDED
        self.report(
            succeeded,
            outcome.latency,
            error=None
            if succeeded
            else f"ping {outcome.seq} {outcome.status.value}: {outcome.error}",
            timeout=outcome.status is PingStatus.ABORTED,
            failure=_FAILURES.get(outcome.status),
        )

    def replay_failed(self, exc: Exception) -> None:
        """A failed result per failed attempt, so a log that is down before the first ping
        (no replay position, so no pings) still shows up as failures, not as silence."""
        # Before any ping: reaching the log failed (connect, refused...) or its reply was bad.
        failure = classify(exc, Phase.CONNECT)
        self.report(
            False, 0.0, error=f"getting the replay position failed: {exc!r}", failure=failure
        )

    def report(
        self,
        success: bool,
        latency: float,
        *,
        error: str | None,
        timeout: bool = False,
        failure: Failure | None = None,
    ) -> None:
        m = self.metrics
        counters = {name: getattr(m, name) for name in _COUNTERS}
        extras: dict[str, int | Distribution] = {
            name: counters[name] - self.last[name] for name in _COUNTERS
        }
        extras["results_dropped"] = self.dropped - self.dropped_sent
        extras["append_latency"] = m.append_latency.subtract(self.last_append)
        result = ProbeResult(
            self.target,
            success,
            latency,
            error=error,
            timeout=timeout,
            extras=extras,
            gauges={"last_applied": m.last_applied},
            failure=failure,
        )
        try:
            self.send.send_nowait(result)
        except trio.WouldBlock:
            self.dropped += 1
            self._warn_dropped()
            return
        self.last = counters
        self.last_append = m.append_latency.clone()
        self.dropped_sent = self.dropped

    def _warn_dropped(self) -> None:
        now = trio.current_time()
        if self._warned_at is not None and now - self._warned_at < self.WARN_INTERVAL:
            return
        self._warned_at = now
        logger.warning(
            "logping %s: results buffer full, %d results dropped so far; their counter changes "
            "ride on the next result sent (extra results_dropped)",
            self.target,
            self.dropped,
        )


class LogPingProbe:
    """One Pinger per target log; see the module docstring."""

    def __init__(self, options: Options, targets: TargetsFn, *, interval: float) -> None:
        self.options = options
        self.targets = targets
        self.interval = interval
        self.ping_interval = options.ping_interval or interval
        #: The running pinger of each target (for inspection and tests).
        self.pingers: dict[str, Pinger] = {}

    def _current(self) -> list[str]:
        return list(dict.fromkeys(self.targets() or [self.options.log]))

    async def _ping(self, target: str, send: trio.MemorySendChannel[ProbeResult]) -> None:
        opts = self.options
        try:
            check_log_spec(target)
        except ValueError as exc:
            logger.error("logping: target %s", exc)
            await send.send(ProbeResult(target, False, error=str(exc)))
            return
        async with open_log(target, prefix=opts.prefix, fsync=opts.fsync) as log:
            pinger = Pinger(
                log.appender,
                log.reader,
                log.next_index,
                ping_interval=self.ping_interval,
                pings_until_disconnect=opts.pings_until_disconnect,
                replay_retry_interval=opts.replay_retry_interval,
                latency_buckets=export_buckets,
            )
            reporter = _Reporter(target, pinger.metrics, send)
            pinger.on_ping = reporter
            pinger.on_replay_error = reporter.replay_failed
            self.pingers[target] = pinger
            try:
                await pinger.run()
            finally:
                # A target removed and re-added may already have a new pinger here while this
                # one is still winding down (e.g. waiting for an append's thread); keep that one.
                if self.pingers.get(target) is pinger:
                    del self.pingers[target]

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        buffer_send, buffer_recv = trio.open_memory_channel[ProbeResult](self.options.buffer)
        scopes: dict[str, trio.CancelScope] = {}

        async def forward() -> None:
            async for result in buffer_recv:
                await results.send(result)

        async def one(target: str, scope: trio.CancelScope) -> None:
            with scope:
                await self._ping(target, buffer_send)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)

            def start(new: list[str]) -> None:
                for target in new:
                    scopes[target] = trio.CancelScope()
                    nursery.start_soon(one, target, scopes[target])

            async def stop(target: str) -> None:
                scopes.pop(target).cancel()

            # Targets may change (the targets file is re-read): follow them every interval.
            await follow_targets(self._current, self.interval, start, stop, task_status=task_status)


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> LogPingProbe:
    return LogPingProbe(options, targets, interval=spec.interval)


# A ping's end -> its failure: the append is the probe's send; an entry that never came back
# through the reader ran out of time waiting for it.
_FAILURES = {
    PingStatus.APPEND_FAILED: Failure(FailureReason.SEND),
    PingStatus.ABORTED: Failure(FailureReason.TIMEOUT, Phase.WAIT),
}
