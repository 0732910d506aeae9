"""The page's pictures as inline SVG (no script, no external asset): the last hour's sparkline,
the 90-day bar, latency charts and shields.io-style badges.

Everything that is not a number is escaped: a ``<title>`` (the hover text) may carry a reason
that came from a target.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from ..alerting.history import History
from ..history import Incident

__all__ = ["badge", "day_bar", "latency_chart", "sparkline"]

_SPARK_W = 120
_SPARK_H = 24
_DAY = 86400


@functools.lru_cache(maxsize=1024)
def _day(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")


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


_GREY, _BLOCKED, _MAINTENANCE = "#d0d7de", "#d4a72c", "#54aeff"


def _day_color(uptime: float | None, held: str) -> str:
    if uptime is None:
        return _MAINTENANCE if held == "maintenance" else _BLOCKED if held else _GREY
    if uptime >= 0.999:
        return "#2da44e"
    if uptime >= 0.99:
        return "#bf8700"
    return "#cf222e"


def _day_label(counts: list[int] | None) -> tuple[float | None, str, str]:
    """(uptime, hover text, what was held) of one day's [probes, successes, blocked,
    maintenance]."""
    if counts is None:
        return None, "no data", ""
    p, s, b, m = counts
    up = s / p if p else None
    text = "no data" if up is None else f"{100 * up:.3f}%"
    held = ""
    for n, what in ((b, "blocked"), (m, "maintenance")):
        if n:
            text += f", {what} {100 * n / (p + b + m):.1f}% of probes"
            held = held or what
    return up, text, held


def _key(counts: list[int] | None) -> object:
    """What a day's bar shows, cheaply: days with equal keys have equal labels."""
    if counts is None:
        return None
    p, s, b, m = counts
    up = round(1e5 * s / p) if p else -1
    if not (b or m):
        return up
    t = p + b + m
    return up, round(1e3 * b / t), round(1e3 * m / t)


def day_bar(
    days: Mapping[int, list[int]],
    incidents: Mapping[int, Sequence[Incident]],
    today: int,
    count: int = 90,
) -> str:
    """The last ``count`` days' uptime, one bar each (``days``: day -> [probes, successes,
    blocked, maintenance]); a run of equal days with no incident is drawn (and hovered) as
    one, which keeps a row of a healthy target under a kilobyte. Days without data are not
    formatted one by one: a healthy row costs a few runs, not 90 labels."""
    w, gap, h = 2, 1, 18
    width = count * (w + gap)
    out = [
        f'<svg class="days" width="{width}" height="{h}" viewBox="0 0 {width} {h}" '
        f'role="img" aria-label="uptime per day, last {count} days">'
    ]
    first = today - (count - 1) * _DAY
    raw = [days.get(first + k * _DAY) for k in range(count)]
    keys = [_key(c) for c in raw]
    i = 0
    while i < count:
        day = first + i * _DAY
        found = incidents.get(day) if incidents else None
        j = i + 1
        if not found:
            while (
                j < count
                and keys[j] == keys[i]
                and not (incidents and incidents.get(first + j * _DAY))
            ):
                j += 1
        up, label, held = _day_label(raw[i])
        span = _day(day) if j == i + 1 else f"{_day(day)} to {_day(first + (j - 1) * _DAY)}"
        title = f"{span}: {label}"
        for inc in found or ():
            title += f"; incident from {_clock(inc.start)}"
            title += f" to {_clock(inc.end)}" if inc.end is not None else " (ongoing)"
            if inc.reason:
                title += f": {inc.reason[:80]}"
        out.append(
            f'<rect x="{i * (w + gap)}" width="{(j - i) * (w + gap) - gap}" height="{h}" '
            f'fill="{_day_color(up, held)}"><title>{html.escape(title)}</title></rect>'
        )
        i = j
    out.append("</svg>")
    return "".join(out)


def latency_chart(
    points: Sequence[tuple[float, float | None, float | None, int, int]],
    a: float,
    b: float,
    *,
    title: str,
    width: int = 720,
    height: int = 160,
) -> str:
    """Latency over ``[a, b)``: p50 and p99 lines (ms), failed probes as red bars.

    ``points`` are (start, p50, p99, probes, failures) per step, in seconds.
    """
    left, right, top, bottom = 48, 8, 18, 20
    pw, ph = width - left - right, height - top - bottom
    peak = max((p for _, _, p, _, _ in points if p is not None), default=0.0) or 0.001
    span = max(b - a, 1.0)

    def x(t: float) -> float:
        return left + pw * (t - a) / span

    def y(v: float) -> float:
        return top + ph - ph * v / peak

    out = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="12" font-size="11">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#f6f8fa"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">'
        f"{peak * 1000:.3g} ms</text>",
        f'<text x="{left - 4}" y="{top + ph}" font-size="10" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 4}" font-size="10">{_clock(a)}</text>',
        f'<text x="{width - right}" y="{height - 4}" font-size="10" text-anchor="end">'
        f"{_clock(b)} UTC</text>",
    ]
    step = span / max(len(points), 1)
    for t, _, _, probes, fails in points:
        if fails and probes:
            bh = ph * fails / probes
            out.append(
                f'<rect class="fail" x="{x(t):.1f}" y="{top + ph - bh:.1f}" '
                f'width="{max(1.0, pw * step / span):.1f}" height="{bh:.1f}" fill="#cf222e" '
                f'opacity="0.5"><title>{_clock(t)}: {fails} of {probes} failed</title></rect>'
            )
    for q, color in ((1, "#0969da"), (2, "#8250df")):
        pts = [(x(p[0] + step / 2), y(v)) for p in points if (v := p[q]) is not None]
        if len(pts) == 1:
            pts.append((pts[0][0] + 2, pts[0][1]))  # one point: a dash, or it would not show
        if pts:
            out.append(
                f'<polyline class="q{q}" fill="none" stroke="{color}" stroke-width="1.5" '
                f'points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in pts)}"/>'
            )
    out.append(
        f'<text x="{width - right}" y="12" font-size="11" text-anchor="end">'
        '<tspan fill="#0969da">p50</tspan> <tspan fill="#8250df">p99</tspan> '
        '<tspan fill="#cf222e">failures</tspan></text></svg>'
    )
    return "".join(out)


def _text_width(text: str) -> int:
    # Verdana 11px averages ~6.5 px per character: close enough to size the boxes.
    return int(len(text) * 6.5) + 10


def badge(label: str, value: str, color: str) -> str:
    """A shields.io-style flat badge: grey label, coloured value."""
    lw, vw = _text_width(label), _text_width(value)
    w = lw + vw
    e = html.escape
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" '
        f'aria-label="{e(label)}: {e(value)}"><title>{e(label)}: {e(value)}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{vw}" height="20" fill="{e(color)}"/>'
        f'<rect width="{w}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        'font-size="11">'
        f'<text x="{lw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{e(label)}</text>'
        f'<text x="{lw / 2:.1f}" y="14">{e(label)}</text>'
        f'<text x="{lw + vw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{e(value)}</text>'
        f'<text x="{lw + vw / 2:.1f}" y="14">{e(value)}</text></g></svg>'
    )
