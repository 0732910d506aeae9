"""The ``influxdb`` surfacer: InfluxDB 1.x line protocol, delivered through the handoff queue.

Every batch of points is first appended durably to a :class:`~trioprobe.handoff.DiskBackedQueue`,
and a :class:`~trioprobe.handoff.WriteReplayer` POSTs the queued batches to ``/write`` in order,
retrying with backoff while InfluxDB is down. So exports made during an outage (or before a crash,
when the same ``queue_dir`` is used again) are delivered when InfluxDB is back.

Delivery is at least once; InfluxDB makes it exactly once in effect, because a point with the same
measurement, tag set and timestamp overwrites itself.

**Schema** (docs/metrics.md has it in full, with InfluxQL examples). One point per exported
``EventMetrics`` group: the counters and the gauges of one (probe, target) at one export share a
measurement, tags and timestamp, so they are one point. The measurement is the probe type
(``ptype`` label), or ``measurement`` when set; tags are the other labels (sorted, empty values
left out); fields are named as the Prometheus families, without the prefix (see ``_naming``):

* a number -> ``<name>=<n>i`` (integer) or ``<name>=<x>`` (NaN and infinities are skipped: line
  protocol cannot carry them); a ``String`` -> ``<name>="<s>"``;
* a ``Map`` -> one field per key, ``<name>_<key>`` (``resp_code_200=5i``); a compound key
  (``failures``' ``reason/phase``) joins its parts with ``_`` (``failures_timeout_connect=1i``);
* a ``Distribution`` -> ``<name>_sum``, ``<name>_count`` and cumulative bucket counts
  ``<name>_le_<upper bound>`` (Prometheus-style, ``_le_+Inf`` == ``_count``); a latency without
  buckets has only ``_le_+Inf``.

Timestamps are the metrics' wall-clock timestamps in nanoseconds (``precision=ns``). Newlines in
tag or string values are replaced by spaces (line protocol has no escape for them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from functools import partial

import attrs
import httpx
import trio

from .._httpx_body import build_request
from .._options import path_field
from .._tls import load_ssl_context
from ..handoff import (
    DiskBackedQueue,
    HandoffError,
    QueueWriteError,
    RecordRejected,
    WriteReplayer,
    open_queue,
)
from ..handoff.disk_queue import (
    DEFAULT_MAX_SEGMENT_SIZE,
    DEFAULT_MAX_SIZE,
    default_queue_dir,
    prepare_default_root,
)
from ..handoff.replayer import (
    DEFAULT_MAX_AGE,
    DEFAULT_PURGE_INTERVAL,
    DEFAULT_RETRY_INTERVAL,
    DEFAULT_RETRY_MAX_INTERVAL,
)
from ..metrics import EventMetrics, Float, Int, Kind, Map, String
from ._naming import cumulative_buckets, exported_values

__all__ = [
    "InfluxError",
    "InfluxSurfacer",
    "Options",
    "PointKey",
    "format_point",
    "make_surfacer",
    "to_lines",
    "to_point",
]

logger = logging.getLogger("trioprobe.surfacers.influx")


@attrs.frozen
class Options:
    """Config keys of an ``influxdb`` surfacer."""

    url: str = "http://127.0.0.1:8086"
    database: str = "trioprobe"
    #: The handoff queue directory (relative to the config file); "" means
    #: ``<tmp>/trioprobe-handoff-<uid>/influxdb-<database>`` (per user: /tmp is shared).
    queue_dir: str = path_field("")
    #: Bytes the queue may use on disk; new points are dropped (and counted) beyond it.
    max_size: int = DEFAULT_MAX_SIZE
    max_segment_size: int = DEFAULT_MAX_SEGMENT_SIZE
    #: Replay rate limit in bytes/s; 0 = unlimited.
    rate_limit: int = 0
    #: Points per write request at most.
    batch_size: int = 1000
    #: Seconds a point may wait for its batch to fill before the batch is queued.
    batch_interval: float = 1.0
    retry_interval: float = DEFAULT_RETRY_INTERVAL
    retry_max_interval: float = DEFAULT_RETRY_MAX_INTERVAL
    #: Queued points older than this (seconds) are purged undelivered.
    max_age: float = DEFAULT_MAX_AGE
    purge_interval: float = DEFAULT_PURGE_INTERVAL
    #: Deadline of one HTTP request, seconds.
    request_timeout: float = 10.0
    #: On shutdown, how long to keep replaying before leaving the rest on disk for next time.
    drain_timeout: float = 5.0
    #: The measurement of every point; "" means the probe type (``http``, ``logping``...).
    measurement: str = ""
    measurement_prefix: str = ""

    def __attrs_post_init__(self) -> None:
        # Checked here so a config mistake is reported at load time, naming the key.
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if not self.database:
            raise ValueError("database must not be empty")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batch_interval <= 0:
            raise ValueError(f"batch_interval must be > 0 s, got {self.batch_interval}")
        if not 0 < self.retry_interval <= self.retry_max_interval:
            raise ValueError(
                f"need 0 < retry_interval ({self.retry_interval}) <= "
                f"retry_max_interval ({self.retry_max_interval})"
            )
        if self.rate_limit < 0:
            raise ValueError(f"rate_limit must be >= 0 bytes/s, got {self.rate_limit}")
        if self.max_size <= 0 or self.max_segment_size <= 64:
            raise ValueError("max_size must be > 0 and max_segment_size > 64 bytes")

    def resolved_queue_dir(self) -> str:
        if self.queue_dir:
            return self.queue_dir
        return default_queue_dir(f"influxdb-{self.database}")


class InfluxError(Exception):
    """InfluxDB refused or failed a request (the replayer retries it)."""


_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": " ", "\r": " "})
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": " ", "\r": " "})


def _key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    # A trailing backslash would escape the separator after it.
    return text.translate(_KEY_ESCAPES).rstrip("\\")


def _number(value: int | float) -> str | None:
    if isinstance(value, int):
        return f"{value}i"
    if not math.isfinite(value):
        return None
    return repr(float(value))


def _bound(upper: float) -> str:
    if upper == math.inf:
        return "+Inf"
    return repr(upper) if upper != int(upper) else str(int(upper))


def _tags(pairs: Mapping[str, str]) -> str:
    return "".join(f",{_key(k)}={_key(v)}" for k, v in sorted(pairs.items()) if k and v)


#: (measurement, tag string, timestamp in ns): what makes two EventMetrics one point.
PointKey = tuple[str, str, int]


def _fields(em: EventMetrics) -> Iterator[tuple[str, str]]:
    for family, value in exported_values(em):
        name = family.name
        if isinstance(value, Int | Float):
            field = _number(value.value)
            if field is not None:
                yield name, field
        elif isinstance(value, String):
            yield name, f'"{value.value.translate(_STRING_ESCAPES)}"'
        elif isinstance(value, Map):
            for key, number in value.values.items():
                field = _number(number)
                if field is not None:
                    # A compound key (failures' "timeout/connect") as one field name part.
                    yield f"{name}_{key.replace('/', '_')}", field
        else:
            total = _number(float(value.sum))
            if total is not None:
                yield f"{name}_sum", total
            yield f"{name}_count", f"{value.count}i"
            for upper, cumulative in cumulative_buckets(value):
                yield f"{name}_le_{_bound(upper)}", f"{cumulative}i"


def to_point(
    em: EventMetrics, *, measurement: str = "", measurement_prefix: str = ""
) -> tuple[PointKey, dict[str, str]] | None:
    """The point ``em`` belongs to and its fields (escaped), or None if it has no field."""
    labels = dict(em.labels)
    if not measurement:
        # The probe type names the measurement, so it is not repeated as a tag.
        measurement = labels.pop("ptype", "") or "trioprobe"
    name = (measurement_prefix + measurement).translate(_MEASUREMENT_ESCAPES)
    fields = {_key(k): v for k, v in _fields(em)}
    fields.pop("", None)
    if not fields:
        return None
    return (name, _tags(labels), round(em.timestamp * 1e9)), fields


def format_point(key: PointKey, fields: Mapping[str, str]) -> str:
    measurement, tags, ts = key
    return f"{measurement}{tags} {','.join(f'{k}={v}' for k, v in fields.items())} {ts}"


def to_lines(em: EventMetrics, measurement_prefix: str = "", *, measurement: str = "") -> list[str]:
    """Line protocol for one ``EventMetrics``: one line (see the module docstring)."""
    point = to_point(em, measurement=measurement, measurement_prefix=measurement_prefix)
    return [] if point is None else [format_point(*point)]


class InfluxSurfacer:
    """Batches metrics into line protocol and hands them to a WriteReplayer over a disk queue."""

    def __init__(
        self, options: Options, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.options = options
        self.name = f"influxdb:{options.url}/{options.database}"
        self._transport = transport
        self._db_ready = False
        self.replayer: WriteReplayer | None = None
        self._queue: DiskBackedQueue | None = None
        #: Points the queue refused (full) or could not confirm durable (a disk error: those
        #: are most likely lost, but if the queue could not cut the failed write off either,
        #: they may still be delivered).
        self.dropped_points = 0
        #: Points handed to the queue.
        self.queued_points = 0

    async def run(
        self,
        metrics: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        o = self.options
        if not o.queue_dir:
            await trio.to_thread.run_sync(prepare_default_root)
        # The shared SSL context, loaded in a thread (a build of its own would block the loop).
        verify = await load_ssl_context()
        async with (
            metrics,
            open_queue(
                o.resolved_queue_dir(), max_size=o.max_size, max_segment_size=o.max_segment_size
            ) as queue,
            httpx.AsyncClient(base_url=o.url, transport=self._transport, verify=verify) as client,
        ):
            replayer = WriteReplayer(
                queue,
                partial(self._send, client),
                transient_errors=(InfluxError, httpx.HTTPError),
                retry_interval=o.retry_interval,
                retry_max_interval=o.retry_max_interval,
                max_age=o.max_age,
                purge_interval=o.purge_interval,
                rate_limit=o.rate_limit,
            )
            self.replayer = replayer
            self._queue = queue
            async with trio.open_nursery() as nursery:
                await nursery.start(replayer.run)
                task_status.started()
                await self._consume(metrics, replayer)
                with trio.move_on_after(o.drain_timeout) as scope:
                    await replayer.wait_drained()
                if scope.cancelled_caught:
                    # pending_bytes, not disk_usage: delivered records stay on disk until
                    # their segment is trimmed, and must not be reported as still queued.
                    logger.warning(
                        "%s: %d bytes of undelivered records left in %s at shutdown; "
                        "sent on next start",
                        self.name,
                        queue.pending_bytes(),
                        queue.directory,
                    )
                nursery.cancel_scope.cancel()

    async def _consume(
        self, metrics: trio.MemoryReceiveChannel[EventMetrics], replayer: WriteReplayer
    ) -> None:
        # Points by key, so a target's counters and gauges of one export become one point.
        batch: dict[PointKey, dict[str, str]] = {}
        deadline = math.inf
        while True:
            em: EventMetrics | None = None
            with trio.move_on_at(deadline):
                try:
                    em = await metrics.receive()
                except trio.EndOfChannel:
                    break
            if em is None:  # the batch interval ran out
                await self._flush(_lines(batch), replayer)
                batch, deadline = {}, math.inf
                continue
            point = to_point(
                em,
                measurement=self.options.measurement,
                measurement_prefix=self.options.measurement_prefix,
            )
            if point is None:
                continue
            if not batch:
                deadline = trio.current_time() + self.options.batch_interval
            key, fields = point
            batch.setdefault(key, {}).update(fields)
            if len(batch) >= self.options.batch_size:
                await self._flush(_lines(batch), replayer)
                batch, deadline = {}, math.inf
        await self._flush(_lines(batch), replayer)

    async def _flush(self, lines: list[str], replayer: WriteReplayer) -> None:
        if not lines:
            return
        try:
            await replayer.write("\n".join(lines).encode())
        except QueueWriteError as exc:
            # The write failed and was cut off again, so the points are most likely lost; but
            # not certainly (see QueueWriteError), hence the wording.
            self.dropped_points += len(lines)
            logger.warning(
                "%s: could not queue %d points (most likely not stored, but may still be "
                "delivered): %s",
                self.name,
                len(lines),
                exc,
            )
            return
        except HandoffError as exc:
            self.dropped_points += len(lines)
            logger.warning("%s: dropped %d points: %s", self.name, len(lines), exc)
            return
        self.queued_points += len(lines)

    async def _send(self, client: httpx.AsyncClient, data: bytes) -> None:
        o = self.options
        with trio.fail_after(o.request_timeout):
            if not self._db_ready:
                # Idempotent in InfluxDB 1.x; done before the first write and after a 404.
                resp = await client.post("/query", params={"q": f'CREATE DATABASE "{o.database}"'})
                if resp.status_code != 200:
                    raise InfluxError(f"CREATE DATABASE failed: {resp.status_code} {resp.text}")
                self._db_ready = True
            write = build_request(
                client, "POST", "/write", params={"db": o.database, "precision": "ns"}, content=data
            )
            resp = await client.send(write)
        if resp.status_code == 204:
            return
        if resp.status_code == 404:
            self._db_ready = False
            raise InfluxError(f"database {o.database!r} not found: {resp.text}")
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
            # A bad batch stays bad: retrying it would block every batch behind it.
            raise RecordRejected(f"InfluxDB refused a batch: {resp.status_code} {resp.text}")
        raise InfluxError(f"write failed: {resp.status_code} {resp.text}")

    def metrics(self) -> EventMetrics:
        """The surfacer's own counters (queue and replay), for self-monitoring."""
        em = EventMetrics(Kind.CUMULATIVE).add_label("surfacer", self.name)
        em.add_metric("queued_points", Int(self.queued_points))
        em.add_metric("dropped_points", Int(self.dropped_points))
        if self.replayer is not None:
            for field, value in attrs.asdict(self.replayer.stats()).items():
                em.add_metric(field, Int(value))
        return em

    def self_metrics(self) -> list[EventMetrics]:
        """What the runner exports about this surfacer beside the probes' metrics.

        The counters of :meth:`metrics` named ``handoff_<counter>`` (``replay_errors`` means
        something else for log ping), and a GAUGE with the queue's current size:
        ``handoff_backlog_bytes`` (records not yet delivered) and ``handoff_disk_usage_bytes``.
        A backlog that keeps growing means InfluxDB is not taking the points.
        """
        counters = EventMetrics(Kind.CUMULATIVE).add_label("surfacer", self.name)
        for name, value in self.metrics().metrics.items():
            if name != "disk_usage":  # a size, not a count: it is a gauge below
                counters.add_metric(f"handoff_{name}", value)
        gauges = EventMetrics(Kind.GAUGE).add_label("surfacer", self.name)
        if self._queue is not None:
            gauges.add_metric("handoff_backlog_bytes", Int(self._queue.pending_bytes()))
            gauges.add_metric("handoff_disk_usage_bytes", Int(self._queue.disk_usage()))
        return [counters, gauges] if gauges.metrics else [counters]


def _lines(batch: Mapping[PointKey, Mapping[str, str]]) -> list[str]:
    return [format_point(key, fields) for key, fields in batch.items()]


def make_surfacer(options: Options) -> InfluxSurfacer:
    return InfluxSurfacer(options)
