"""The ``prometheus`` surfacer: the latest exported metrics on ``/metrics``.

The exposition follows Prometheus's naming guide: every family has HELP and TYPE, names start
with ``prefix`` (``trioprobe_`` by default), counters end in ``_total``, durations are in seconds
and say so (``trioprobe_latency_seconds``). How a metric is named and typed is one rule for all of
them (see :mod:`._naming`); values map to samples as follows:

* a number is a counter (CUMULATIVE) or a gauge (GAUGE); a ``Map`` is one series per key,
  labelled with the map's name (``trioprobe_resp_code_total{code="200"}``);
* a ``Distribution`` is a histogram (``_bucket{le=...}`` cumulative up to ``+Inf``, ``_sum``,
  ``_count``); a ``String`` is an info metric (``name_info{val="..."} 1``).

It is built on ``prometheus_client``: a scrape turns the latest ``EventMetrics`` per label set
into ``prometheus_client`` families and lets its encoder write them, so a scraper asking for
``application/openmetrics-text`` gets OpenMetrics and everyone else the 0.0.4 text format. A
series not updated for ``expiry`` seconds is dropped, so removed targets vanish.

What a scrape costs, and what a client can make it cost (docs/metrics.md, "/metrics server"):

* the body is rendered from a snapshot (a copy of the series table: the ``EventMetrics`` in it
  are clones nobody changes) on the event loop, a few series, then a few samples, per step
  (``_SERIES_PER_STEP``, ``_slices.SAMPLES_PER_STEP``), into slices of about ``SEND_SLICE``
  bytes that are never joined (see :mod:`._slices` for why not a thread); expired series are
  dropped ``_EXPIRE_CHUNK`` per step;
* one render per content type is in flight at a time: concurrent scrapes wait for it and share
  its body, and a body is reused while no series changed, or for ``MIN_RENDER_INTERVAL`` or
  twice the last render's duration, whichever is longer (so rendering takes at most about half
  of a core, however often clients scrape);
* with a live source (:meth:`PrometheusSurfacer.attach_live_source`; the runner attaches its
  keepers), a render first reads every target's current state, so each scrape is fresh
  whatever the ``stats_interval`` (docs/metrics.md, "Fresh at every scrape");
* the body goes out slice by slice, so a connection buffers one slice beyond the shared
  body; one that does not read is closed after the server's ``request_timeout``.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import Metric

from .._asgi import Receive, Scope, Send, answer_lifespan, send_response, serve_asgi

if TYPE_CHECKING:
    from ..reload import ReloadOutcome
from ..metrics import EventMetrics, Float, Int, Map, String
from ._naming import (
    CLASH_PRECEDENCE,
    Family,
    clash_renamed,
    cumulative_buckets,
    exported_values,
    sanitize_label,
)
from ._slices import FamilyRows, Row, Sample, _Families, encode_in_steps

__all__ = [
    "MIN_RENDER_INTERVAL",
    "SEND_SLICE",
    "Options",
    "PrometheusSurfacer",
    "collect",
    "make_surfacer",
    "render",
]

#: Seconds a rendered body is reused for, even if series changed meanwhile: scrapes arriving
#: together share one render. Short enough that a 1 s scrape interval sees every change.
MIN_RENDER_INTERVAL: Final = 0.5
#: Bytes of the body handed to the connection at a time (all it buffers beyond the shared body).
SEND_SLICE: Final = 64 * 1024
# Expired series dropped, or live series recorded, per event-loop step (a few calls each).
_EXPIRE_CHUNK: Final = 128
# Series turned into samples per event-loop step of a render (a series with a 20-bucket
# histogram is about 340 calls).
_SERIES_PER_STEP: Final = 2

#: Reads the current state of every target at scrape time (the runner's keepers).
LiveSource = Callable[[], Awaitable[list["EventMetrics"]]]

Encoder = Callable[[Any], bytes]
_Entry = tuple["EventMetrics", float]


@attrs.frozen
class Options:
    """Config keys of a ``prometheus`` surfacer."""

    host: str = "127.0.0.1"
    #: 0 picks a free port (the bound URL is logged and available as ``surfacer.url``).
    port: int = 9313
    path: str = "/metrics"
    #: Prepended to every family name; may be empty.
    prefix: str = attrs.field(default="trioprobe_")
    #: Seconds after which a series that is no longer exported disappears.
    expiry: float = 600.0

    @prefix.validator
    def _check_prefix(self, _: object, value: str) -> None:
        if value and not _PREFIX.fullmatch(value):
            raise ValueError(
                f"prefix must be letters, digits and '_' (not starting with a digit), got {value!r}"
            )


_PREFIX = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Labels a Map's key or a String's text may not take: the series' own, and the reserved ones.
_RESERVED_LABELS = frozenset({"le", "quantile"})


def _free_label(name: str, taken: Mapping[str, str]) -> str:
    label = sanitize_label(name)
    while label in taken or label in _RESERVED_LABELS:
        label = f"{label}_key"
    return label


@attrs.define
class _Group:
    """One family's rows while a scrape is assembled: (series labels, value) per series, turned
    into samples only when encoded (a histogram is ~24 samples, each with its own label dict:
    made all at once for 10,000 targets they were 500,000 objects for the collector to walk)."""

    family: Family
    rows: list[Row] = attrs.field(factory=list)


def _samples(family: Family, row: Row) -> list[Sample]:
    """The samples of one series' value in ``family``."""
    labels, value = row
    kind = family.type
    if isinstance(value, Int | Float):
        return [("_total" if kind == "counter" else "", labels, value.value)]
    if isinstance(value, String):
        return [("_info", {**labels, _free_label("val", labels): value.value}, 1)]
    if isinstance(value, Map):
        suffix = "_total" if kind == "counter" else ""
        if "/" in value.name:
            return _compound(value, labels, suffix)
        key_label = _free_label(value.name, labels)
        return [
            (suffix, {**labels, key_label: key}, number) for key, number in value.values.items()
        ]
    out: list[Sample] = [
        ("_bucket", {**labels, "le": _format_bound(upper)}, cumulative)
        for upper, cumulative in cumulative_buckets(value)
    ]
    out.append(("_count", labels, value.count))
    out.append(("_sum", labels, value.sum))
    return out


def _compound(value: Map, labels: dict[str, str], suffix: str) -> list[Sample]:
    # A map named "a/b" is keyed "x/y": one label per part (failures{reason, phase}), so a
    # value with two dimensions needs no second value type.
    names = [_free_label(part, labels) for part in value.name.split("/")]
    out: list[Sample] = []
    for key, number in value.values.items():
        parts = key.split("/", len(names) - 1)
        parts += [""] * (len(names) - len(parts))
        out.append((suffix, {**labels, **dict(zip(names, parts, strict=True))}, number))
    return out


def _format_bound(upper: float) -> str:
    # As Go and prometheus_client print bounds: "+Inf", "0.5", "1.0" (a bound is always a float).
    return "+Inf" if upper == math.inf else repr(float(upper))


class _Collector:
    """The families of a series table, built one series at a time (so a render can take its
    series a few per event-loop step)."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], _Group] = {}

    def add(self, em: EventMetrics) -> None:
        labels: dict[str, str] = {}
        for key, text in em.labels.items():
            label = sanitize_label(key)
            # A series label called `le` would be overwritten by a histogram's own (Prometheus
            # names such a label exported_<name> when it clashes at scrape time too).
            if label in _RESERVED_LABELS:
                label = f"exported_{label}"
            labels.setdefault(label, text)
        groups = self._groups
        for family, value in exported_values(em, prometheus=True):
            group = groups.get((family.name, family.type))
            if group is None:
                group = groups[family.name, family.type] = _Group(family)
            group.rows.append((labels, value))

    def families(self, prefix: str) -> list[FamilyRows]:
        """(full name, family, rows) per family, clashing names resolved (see collect)."""
        types: dict[str, list[str]] = {}
        for name, type_ in self._groups:
            types.setdefault(name, []).append(type_)
        out: list[FamilyRows] = []
        for (name, type_), group in self._groups.items():
            family = group.family
            if len(types[name]) > 1 and min(types[name], key=CLASH_PRECEDENCE.index) != type_:
                family = clash_renamed(family)
            out.append((prefix + family.name, family, group.rows))
        return out


def collect(series: Iterable[EventMetrics], prefix: str = "trioprobe_") -> list[Metric]:
    """The families of ``series`` as ``prometheus_client`` metrics (for any of its encoders).

    Nothing is left out: when values of different types claim one name (a gauge and a histogram
    both called ``x``), the type first in ``histogram, counter, gauge, info`` keeps the name and
    each other one gets its ``CLASH_SUFFIX`` (``x_current``), whatever order they came in.
    """
    collector = _Collector()
    for em in series:
        collector.add(em)
    out: list[Metric] = []
    for full, family, rows in collector.families(prefix):
        metric = Metric(full, family.help, family.type, family.unit)
        for row in rows:
            for suffix, labels, number in _samples(family, row):
                metric.add_sample(full + suffix, labels, number)
        out.append(metric)
    return out


def render(series: Iterable[EventMetrics], prefix: str = "trioprobe_") -> str:
    """The Prometheus text format (0.0.4) of ``series``: HELP, TYPE and samples per family."""
    return generate_latest(_Families(collect(series, prefix))).decode()


@attrs.define
class _Rendered:
    #: The body in slices of about ``SEND_SLICE`` bytes (never joined: see _slices.py).
    body: list[bytes]
    #: The surfacer's generation the snapshot was taken at, and the trio time it was taken.
    generation: int
    at: float
    #: When a series in it expires: the body is stale then even if nothing was recorded.
    valid_until: float


class PrometheusSurfacer:
    """Serves the latest metrics on ``http://host:port/metrics`` (trioprobe._asgi's server)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.name = "prometheus"
        #: The bound base URL, once running.
        self.url: str | None = None
        # (kind, label set) -> (latest metrics, trio time it arrived). A target's cumulative and
        # gauge metrics share labels, so the kind keeps them apart.
        self._series: dict[tuple[object, ...], _Entry] = {}
        # Bumped whenever a series changes: a body rendered at the same generation is current.
        self._generation = 0
        # Per content type: the latest body, and the event of a render in flight.
        self._rendered: dict[str, _Rendered] = {}
        self._rendering: dict[str, trio.Event] = {}
        #: Bodies rendered so far (tests and the benchmark read it).
        self.renders = 0
        self._live: LiveSource | None = None
        self._render_seconds = 0.0
        #: Set by the runner when it can reload (it has a config file): ``POST /-/reload``.
        self.reload_handler: Callable[[], Awaitable[ReloadOutcome]] | None = None

    def attach_live_source(self, source: LiveSource) -> None:
        """Read ``source`` before each render, so a scrape sees the targets' current counts.

        Without one, a scrape sees the latest export (every ``stats_interval``). A render
        happens at most every ``MIN_RENDER_INTERVAL`` however many scrapers, so the source is
        read at most that often too.
        """
        self._live = source

    def record(self, em: EventMetrics) -> None:
        key = (em.kind, tuple(sorted(em.labels.items())))
        now = trio.current_time()
        held = self._series.get(key)
        if held is not None and held[0].timestamp > em.timestamp:
            # An export cloned before a scrape-time read arrived after it: keeping the newer
            # counts is what keeps a counter from going back (Prometheus would see a reset).
            self._series[key] = (held[0], now)
            return
        self._series[key] = (em, now)
        self._generation += 1

    def _current(self) -> list[EventMetrics]:
        cutoff = trio.current_time() - self.options.expiry
        for key in [k for k, (_, seen) in self._series.items() if seen < cutoff]:
            del self._series[key]
        return [em for em, _ in self._series.values()]

    def render(self) -> str:
        """The text format (0.0.4) of the current series."""
        return render(self._current(), self.options.prefix)

    def encode(self, accept: str) -> tuple[bytes, str]:
        """The body and content type a scraper that sent ``Accept: accept`` asked for."""
        encoder, content_type = choose_encoder(accept)
        families = _Families(collect(self._current(), self.options.prefix))
        return encoder(families), content_type

    async def body(self, accept: str) -> tuple[bytes, str]:
        """The body and content type for a scrape, joined (the server sends :meth:`slices`)."""
        slices, content_type = await self.slices(accept)
        return b"".join(slices), content_type

    async def slices(self, accept: str) -> tuple[list[bytes], str]:
        """The body in slices and its content type for a scrape: shared, reused, or rendered
        a few series and samples per event-loop step."""
        encoder, content_type = choose_encoder(accept)
        while True:
            now = trio.current_time()
            cached = self._rendered.get(content_type)
            # With a live source the series change without a record(): only age tells.
            unchanged = self._live is None and cached is not None
            if cached is not None and (
                (unchanged and cached.generation == self._generation and now < cached.valid_until)
                or now - cached.at < self.reuse_for
            ):
                return cached.body, content_type
            in_flight = self._rendering.get(content_type)
            if in_flight is None:
                return await self._render(encoder, content_type), content_type
            await in_flight.wait()
            if (done := self._rendered.get(content_type)) is not None and done is not cached:
                return done.body, content_type
            # That render failed (its scraper got the error): try again.

    @property
    def reuse_for(self) -> float:
        """Seconds a rendered body is served after its snapshot, even if series changed.

        Twice the last render's duration bounds the rendering thread to about half a core,
        however often scrapers ask (a large body can take seconds to render).
        """
        return max(MIN_RENDER_INTERVAL, 2 * self._render_seconds)

    async def _render(self, encoder: Encoder, content_type: str) -> list[bytes]:
        event = self._rendering[content_type] = trio.Event()
        try:
            if self._live is not None:
                await self._record_live(self._live)
            generation, now = self._generation, trio.current_time()
            started = time.perf_counter()  # real time: the cost, whatever trio's clock does
            cutoff = now - self.options.expiry
            # A C-level copy of the table: the EventMetrics in it are clones nobody changes, so
            # what record() and expiry do meanwhile cannot change this render.
            entries = list(self._series.items())
            collector = _Collector()
            expired: list[tuple[object, ...]] = []
            oldest = math.inf
            for start in range(0, len(entries), _SERIES_PER_STEP):
                for key, (em, seen) in entries[start : start + _SERIES_PER_STEP]:
                    if seen < cutoff:
                        expired.append(key)
                    else:
                        collector.add(em)
                        oldest = min(oldest, seen)
                await trio.lowlevel.checkpoint()
            families = collector.families(self.options.prefix)
            body = await encode_in_steps(families, _samples, encoder, SEND_SLICE)
            self.renders += 1
            self._render_seconds = time.perf_counter() - started
            valid_until = oldest + self.options.expiry
            self._rendered[content_type] = _Rendered(body, generation, now, valid_until)
        finally:
            del self._rendering[content_type]
            event.set()
        await self._expire(expired, cutoff)
        return body

    async def _record_live(self, source: LiveSource) -> None:
        fresh = await source()
        for start in range(0, len(fresh), _EXPIRE_CHUNK):
            for em in fresh[start : start + _EXPIRE_CHUNK]:
                self.record(em)
            await trio.lowlevel.checkpoint()

    async def _expire(self, keys: list[tuple[object, ...]], cutoff: float) -> None:
        for start in range(0, len(keys), _EXPIRE_CHUNK):
            for key in keys[start : start + _EXPIRE_CHUNK]:
                entry = self._series.get(key)
                if entry is not None and entry[1] < cutoff:  # not recorded again meanwhile
                    del self._series[key]
                    self._generation += 1
            await trio.lowlevel.checkpoint()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif scope["path"] == "/-/reload":
            await self._reload(scope, send)
        elif scope["path"] != self.options.path:
            await send_response(
                send, 404, b"not found: metrics are at " + self.options.path.encode()
            )
        elif scope["method"] not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed")
        else:
            accept = b",".join(v for k, v in scope.get("headers", ()) if k.lower() == b"accept")
            body, content_type = await self.slices(accept.decode("latin-1"))
            await _send_slices(send, body, content_type.encode())

    async def _reload(self, scope: Scope, send: Send) -> None:
        """``POST /-/reload``, as blackbox_exporter's: only on a loopback bind and from a
        loopback client, since anyone who can reach it can make the process re-read its
        config. 200 with what changed, 500 with why the new config was refused."""
        client = (scope.get("client") or ("", 0))[0]
        if scope["method"] != "POST":
            await send_response(send, 405, b"method not allowed: POST /-/reload")
        elif not (_loopback(self.options.host) and _loopback(client)):
            await send_response(send, 403, b"forbidden: /-/reload is served to loopback only")
        elif self.reload_handler is None:
            await send_response(send, 503, b"reload unavailable: not run from a config file")
        else:
            outcome = await self.reload_handler()
            await send_response(send, 200 if outcome.ok else 500, outcome.message.encode() + b"\n")

    async def run(
        self,
        metrics: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            try:
                self.url = await nursery.start(
                    serve_asgi, self.app, self.options.host, self.options.port
                )
            except OSError as exc:  # serve_asgi raises it as itself, not in a group
                # The bind error alone ("Address already in use") does not say which address.
                where = f"{self.options.host}:{self.options.port}"
                raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
            async with metrics:
                task_status.started()
                async for em in metrics:
                    self.record(em)
            # The stream has ended (shutdown): stop serving.
            nursery.cancel_scope.cancel()


async def _send_slices(send: Send, body: list[bytes], content_type: bytes) -> None:
    """A 200 with ``Content-Length`` whose body goes out one shared slice at a time: no
    connection copies the whole body, and no step joins it."""
    length = sum(len(piece) for piece in body)
    headers = [(b"content-type", content_type), (b"content-length", str(length).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for index, piece in enumerate(body):
        more = index + 1 < len(body)
        await send({"type": "http.response.body", "body": piece, "more_body": more})
    if not body:
        await send({"type": "http.response.body", "body": b""})


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def make_surfacer(options: Options) -> PrometheusSurfacer:
    return PrometheusSurfacer(options)
