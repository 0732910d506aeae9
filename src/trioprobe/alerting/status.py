"""The status page: ``/status`` (HTML) and ``/status.json``, rendered on the server.

One table per probe, one row per target: state, success ratio over 5 minutes and 1 hour, latency
p50/p99, an inline SVG sparkline of the last hour (mean latency per minute as a line, minutes
with failures as red bars), whether its alert is firing, and the last error. The page has no
script and no external asset (deployments often have no internet); it reloads itself with a
``<meta http-equiv="refresh">``. Every string that comes from a target list or an error is
escaped: a target named ``<script>`` is shown as text.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import trio

from .._asgi import Receive, Scope, Send, answer_lifespan, send_response
from .health import Health
from .history import History
from .state import DOWN, TargetHealth

__all__ = ["StatusPage", "render_html", "render_json"]

_SPARK_W = 180
_SPARK_H = 24

_CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#eee}.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:bold;text-transform:uppercase}
.up .state{color:#1a7f37}.down .state{color:#cf222e}.unknown .state{color:#6e7781}
tr.down{background:#fff0f0}.err{color:#6e7781;max-width:30em;overflow-wrap:anywhere}
.target{overflow-wrap:anywhere;max-width:30em}
"""


def _pct(ratio: float | None) -> str:
    return "&ndash;" if ratio is None else f"{100 * ratio:.1f}%"


def _ms(seconds: float | None) -> str:
    return "&ndash;" if seconds is None else f"{seconds * 1000:.1f} ms"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def sparkline(history: History, now: float) -> str:
    """An inline SVG of the last hour: latency line, failure bars (numbers only: no text)."""
    series = history.series(now)
    step = _SPARK_W / len(series)
    peak = max((lat for lat, _, _ in series if lat is not None), default=0.0) or 1.0
    parts = [
        f'<svg class="spark" width="{_SPARK_W}" height="{_SPARK_H}" '
        f'viewBox="0 0 {_SPARK_W} {_SPARK_H}" role="img" aria-label="last hour">',
        # The frame of the hour, so a target with only a few minutes of history still reads.
        f'<rect width="{_SPARK_W}" height="{_SPARK_H}" fill="#f3f4f6"/>',
    ]
    points: list[str] = []
    last = (0.0, 0.0)
    for i, (lat, count, fails) in enumerate(series):
        x = i * step
        if fails:
            height = _SPARK_H * fails / count
            parts.append(
                f'<rect x="{x:.1f}" y="{_SPARK_H - height:.1f}" width="{step:.1f}" '
                f'height="{height:.1f}" fill="#cf222e" opacity="0.6"/>'
            )
        if lat is not None:
            y = _SPARK_H - 2 - (_SPARK_H - 4) * lat / peak
            points.append(f"{x + step / 2:.1f},{y:.1f}")
            last = (x, y)
    if len(points) == 1:
        # One minute of data: a dash across that minute, or it would not show at all.
        points = [f"{last[0]:.1f},{last[1]:.1f}", f"{last[0] + step:.1f},{last[1]:.1f}"]
    if points:
        parts.append(
            f'<polyline fill="none" stroke="#0969da" stroke-width="1.5" '
            f'points="{" ".join(points)}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


Snapshot = list[tuple[TargetHealth, History]]
#: Rows rendered between two checkpoints: a row takes ~0.13 ms, so a page of thousands of
#: targets yields to the probes every ~1 ms instead of holding the event loop for the whole page.
_ROWS_PER_CHECKPOINT = 8


def _row(h: TargetHealth, history: History, now: float) -> str:
    e = html.escape
    firing = h.state == DOWN and bool(h.rule.name)
    cells = [
        f'<td class="target">{e(h.target)}</td>',
        f'<td class="state">{e(h.state)}</td>',
        f"<td>{_when(h.since)}</td>",
        f'<td class="num">{_pct(history.success_ratio(now, 300))}</td>',
        f'<td class="num">{_pct(history.success_ratio(now, 3600))}</td>',
        f'<td class="num">{_ms(history.percentile(0.5))}</td>',
        f'<td class="num">{_ms(history.percentile(0.99))}</td>',
        f"<td>{sparkline(history, now)}</td>",
        f"<td>{'FIRING: ' + e(h.rule.name) if firing else ''}</td>",
        f'<td class="err">{e(h.last_error or "")}</td>',
    ]
    return (
        f'<tr class="{e(h.state)}" data-state="{e(h.state)}" '
        f'data-target="{e(h.target)}">' + "".join(cells) + "</tr>"
    )


def _html_parts(snapshot: Snapshot, refresh: int, now: float) -> Iterator[str]:
    """The page in pieces: the head, then one piece per row (so the caller can pause)."""
    e = html.escape
    head = (
        "<th>target</th><th>state</th><th>since</th><th>ok 5 min</th><th>ok 1 h</th>"
        "<th>p50</th><th>p99</th><th>last hour</th><th>alert</th><th>last error</th>"
    )
    groups: dict[str, Snapshot] = {}
    for entry in snapshot:
        groups.setdefault(entry[0].probe, []).append(entry)
    down = sum(h.state == DOWN for h, _ in snapshot)
    yield (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh)}">'
        f"<title>trioprobe status: {down} down</title><style>{_CSS}</style></head><body>"
        f"<h1>trioprobe status</h1><p>{down} target(s) down; generated {_when(time.time())}, "
        f"refreshes every {int(refresh)} s.</p>"
    )
    for probe, entries in groups.items():
        yield f'<h2>probe {e(probe)}</h2><table data-probe="{e(probe)}"><tr>{head}</tr>'
        for h, history in entries:
            yield _row(h, history, now)
        yield "</table>"
    if not groups:
        yield "<p>No results yet.</p>"
    yield "</body></html>"


def _json_parts(snapshot: Snapshot, now: float) -> Iterator[str]:
    yield '{"targets": ['
    for i, (h, history) in enumerate(snapshot):
        row = {
            "probe": h.probe,
            "target": h.target,
            "state": h.state,
            "since": h.since,
            "alert": h.rule.name,
            "firing": h.state == DOWN and bool(h.rule.name),
            "failures": h.failures,
            "total": h.total,
            "error": h.last_error,
            "transitions": h.transitions,
            "success_ratio_5m": history.success_ratio(now, 300),
            "success_ratio_1h": history.success_ratio(now, 3600),
            "latency_p50": history.percentile(0.5),
            "latency_p99": history.percentile(0.99),
        }
        yield (", " if i else "") + json.dumps(row)
    yield "]}"


def render_html(health: Health, *, refresh: int = 5, now: float | None = None) -> str:
    """The whole page at once; ``now`` is the Trio clock reading the history is relative to."""
    now = trio.current_time() if now is None else now
    return "".join(_html_parts(health.snapshot(), refresh, now))


def render_json(health: Health, *, now: float | None = None) -> str:
    """The page's data as JSON (``/status.json``): one object per target, for scripts."""
    now = trio.current_time() if now is None else now
    return "".join(_json_parts(health.snapshot(), now))


async def _join(parts: Iterator[str]) -> bytes:
    """Join ``parts``, letting other tasks run every few rows (see _ROWS_PER_CHECKPOINT)."""
    out: list[str] = []
    for i, part in enumerate(parts, 1):
        out.append(part)
        if i % _ROWS_PER_CHECKPOINT == 0:
            await trio.lowlevel.checkpoint()
    return "".join(out).encode()


class StatusPage:
    """The ASGI app serving ``/status`` and ``/status.json`` for ``health``."""

    def __init__(self, health: Health, *, refresh: int = 5) -> None:
        self.health = health
        self.refresh = refresh

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed")
        elif scope["path"] in ("/status", "/status/", "/"):
            # A snapshot of the entries (a list copy); targets removed while the page is being
            # rendered keep their last values in it.
            parts = _html_parts(self.health.snapshot(), self.refresh, trio.current_time())
            page = await _join(parts)
            await send_response(send, 200, page, b"text/html; charset=utf-8")
        elif scope["path"] == "/status.json":
            await send_response(send, 200, render_json(self.health).encode(), b"application/json")
        else:
            await send_response(send, 404, b"not found: the status page is at /status")
