"""The ``prometheus`` surfacer: the latest exported metrics on ``/metrics``, in the text format.

Mapping (cloudprober's): CUMULATIVE values are counters and GAUGE values gauges; a ``Map`` is one
series per key, labelled with the map's name; a ``Distribution`` is a histogram
(``_bucket{le=...}`` cumulative up to ``+Inf``, ``_sum``, ``_count``); a ``String`` is
``name{val="..."} 1``. Names are sanitised to Prometheus's alphabet (``resp-code`` becomes
``resp_code``). A series not updated for ``expiry`` seconds is dropped, so removed targets vanish.

The surfacer keeps only the latest ``EventMetrics`` per label set, and renders on each scrape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping

import attrs
import trio

from .._asgi import Receive, Scope, Send, answer_lifespan, send_response, serve_asgi
from ..metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String

__all__ = ["Options", "PrometheusSurfacer", "make_surfacer", "render"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


@attrs.frozen
class Options:
    """Config keys of a ``prometheus`` surfacer."""

    host: str = "127.0.0.1"
    #: 0 picks a free port (the bound URL is logged and available as ``surfacer.url``).
    port: int = 9313
    path: str = "/metrics"
    #: Prepended to every metric name, e.g. ``"trioprobe_"``.
    prefix: str = ""
    #: Seconds after which a series that is no longer exported disappears.
    expiry: float = 600.0


_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_name(name: str) -> str:
    """A valid metric name: invalid characters become ``_``, a leading digit gets a ``_``."""
    name = _INVALID_NAME_CHARS.sub("_", name)
    return f"_{name}" if not name or name[0].isdigit() else name


def sanitize_label(name: str) -> str:
    name = _INVALID_LABEL_CHARS.sub("_", name)
    return f"_{name}" if not name or name[0].isdigit() else name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value) if isinstance(value, float) else str(value)


def _samples(
    em: EventMetrics, prefix: str
) -> Iterator[tuple[str, str, str, Mapping[str, str], float]]:
    """(family name, family type, sample name, labels, value) for every sample of ``em``."""
    labels = {sanitize_label(k): v for k, v in em.labels.items()}
    scalar_type = "counter" if em.kind is Kind.CUMULATIVE else "gauge"
    for raw_name, value in em.metrics.items():
        name = sanitize_name(prefix + raw_name)
        if isinstance(value, Int | Float):
            yield name, scalar_type, name, labels, value.value
        elif isinstance(value, String):
            yield name, "gauge", name, {**labels, "val": value.value}, 1
        elif isinstance(value, Map):
            key_label = sanitize_label(value.name)
            for key, number in value.values.items():
                yield name, scalar_type, name, {**labels, key_label: key}, number
        elif isinstance(value, Distribution):
            cumulative = 0
            bounds = value.lower_bounds
            for i, count in enumerate(value.bucket_counts):
                cumulative += count
                upper = bounds[i + 1] if i + 1 < len(bounds) else math.inf
                le = {**labels, "le": _format_value(upper)}
                yield name, "histogram", f"{name}_bucket", le, cumulative
            yield name, "histogram", f"{name}_sum", labels, value.sum
            yield name, "histogram", f"{name}_count", labels, value.count


def render(series: Iterator[EventMetrics] | list[EventMetrics], prefix: str = "") -> str:
    """The text exposition of ``series``: one ``# TYPE`` line per family, then its samples.

    A name first seen with one type keeps it; samples that would give it another type are left
    out (Prometheus rejects a family of mixed types).
    """
    families: dict[str, tuple[str, list[str]]] = {}
    for em in series:
        for family, kind, sample, labels, value in _samples(em, prefix):
            entry = families.setdefault(family, (kind, []))
            if entry[0] == kind:
                entry[1].append(f"{sample}{_format_labels(labels)} {_format_value(value)}")
    out: list[str] = []
    for family, (kind, lines) in families.items():
        out.append(f"# TYPE {family} {kind}")
        out.extend(lines)
    return "\n".join(out) + "\n" if out else ""


class PrometheusSurfacer:
    """Serves the latest metrics on ``http://host:port/metrics`` (Hypercorn, Trio worker)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.name = "prometheus"
        #: The bound base URL, once running.
        self.url: str | None = None
        # (kind, label set) -> (latest metrics, trio time it arrived). A target's cumulative and
        # gauge metrics share labels, so the kind keeps them apart.
        self._series: dict[tuple[object, ...], tuple[EventMetrics, float]] = {}

    def record(self, em: EventMetrics) -> None:
        key = (em.kind, tuple(sorted(em.labels.items())))
        self._series[key] = (em, trio.current_time())

    def render(self) -> str:
        cutoff = trio.current_time() - self.options.expiry
        for key in [k for k, (_, seen) in self._series.items() if seen < cutoff]:
            del self._series[key]
        return render([em for em, _ in self._series.values()], self.options.prefix)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif scope["path"] != self.options.path:
            await send_response(
                send, 404, b"not found: metrics are at " + self.options.path.encode()
            )
        elif scope["method"] not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed")
        else:
            await send_response(send, 200, self.render().encode(), CONTENT_TYPE)

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
            except* OSError as group:
                # The bind error alone ("Address already in use") does not say which address.
                exc = group.exceptions[0]
                while isinstance(exc, BaseExceptionGroup):
                    exc = exc.exceptions[0]
                where = f"{self.options.host}:{self.options.port}"
                raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from group
            async with metrics:
                task_status.started()
                async for em in metrics:
                    self.record(em)
            # The stream has ended (shutdown): stop serving.
            nursery.cancel_scope.cancel()


def make_surfacer(options: Options) -> PrometheusSurfacer:
    return PrometheusSurfacer(options)
