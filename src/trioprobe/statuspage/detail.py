"""A target's own page: live state, uptime per window, latency charts over 24 h and 7 d with
their quantiles, the incident timeline and the recent failures with their reasons.

:func:`gather` reads the store (in the history service's reader thread); :func:`detail_html`
renders what it read, for one target, so it is small and quick.
"""

from __future__ import annotations

import html
import json

import attrs

from ..history import Incident, TargetSummary, quantile
from ..history._windows import DAY
from ..history.store import Store
from ._common import CSS, Row, ms, pct, when, wrap_target
from .svg import latency_chart

__all__ = ["Detail", "detail_html", "gather", "points"]

Point = tuple[float, float | None, float | None, int, int]


@attrs.frozen
class Detail:
    day: tuple[Point, ...]
    week: tuple[Point, ...]
    failures: tuple[tuple[int, int, int, str | None], ...]
    incidents: tuple[Incident, ...]


def points(
    rows: list[tuple[int, int, int, float, str | None]],
    bounds: tuple[float, ...],
    a: float,
    b: float,
    step: int,
) -> list[tuple[int, int, int, float, float | None, float | None]]:
    """Rows folded into ``step``-second buckets over ``[a, b)``:
    (start, probes, successes, mean latency, p50, p99); buckets with no probes are left out."""
    probes: dict[int, int] = {}
    successes: dict[int, int] = {}
    latency: dict[int, float] = {}
    hists: dict[int, dict[int, int]] = {}
    for t, p, s, lat, hist in rows:
        if not a <= t < b:
            continue
        k = int(a + (t - a) // step * step)
        probes[k] = probes.get(k, 0) + p
        successes[k] = successes.get(k, 0) + s
        latency[k] = latency.get(k, 0.0) + lat
        h = hists.setdefault(k, {})
        for i, n in (json.loads(hist) if hist else {}).items():
            h[int(i)] = h.get(int(i), 0) + n
    out = []
    for k in sorted(probes):
        ok = successes[k]
        out.append(
            (
                k,
                probes[k],
                ok,
                latency[k] / ok if ok else 0.0,
                quantile(bounds, hists[k], 0.5),
                quantile(bounds, hists[k], 0.99),
            )
        )
    return out


def gather(store: Store, probe: str, target: str, now: float) -> Detail | None:
    """Everything the page needs from the store (runs in the reader thread)."""
    known = store.target(probe, target)
    if known is None:
        return None
    tid, bounds = known
    marks = store.watermarks()
    rows = store.rows(tid, now - 7 * DAY, now, marks)

    def chart(a: float, step: int) -> tuple[Point, ...]:
        return tuple(
            (t, p50, p99, p, p - s) for t, p, s, _, p50, p99 in points(rows, bounds, a, now, step)
        )

    return Detail(
        day=chart(now - DAY, 900),
        week=chart(now - 7 * DAY, 7200),
        failures=tuple(store.failures(tid, 50)),
        incidents=tuple(Incident(*r) for r in store.incidents(now - 90 * DAY, [tid], 100)),
    )


def _uptimes(s: TargetSummary | None) -> str:
    if s is None:
        return (
            '<p class="muted">No history yet (it needs a <code>[history]</code> table and a '
            "completed minute).</p>"
        )
    windows = ("1h", "24h", "7d", "30d")
    cells = "".join(f"<th>{w}</th>" for w in windows)
    vals = "".join(f'<td class="num">{pct(s.uptime(w), 3)}</td>' for w in windows)
    # Time kept apart from uptime: blocked by a dependency, or in maintenance outside the SLO.
    for what in ("blocked", "maintenance"):
        shares = [s.counts[w].share(what) if w in s.counts else None for w in windows]
        if any(shares):
            vals += f'</tr><tr class="{what}"><td>{what} (not counted)</td>' + "".join(
                f'<td class="num">{pct(x, 2)}</td>' for x in shares
            )
    slo = ""
    if s.slo is not None:
        burns = ", ".join(
            f"{w}: {'&ndash;' if r is None else f'{r:.2f}'}" for w, r in s.burn_rates.items()
        )
        slo = (
            f"<p>SLO {100 * s.slo:g}%: error budget remaining {pct(s.budget_remaining, 1)}; "
            f"burn rate {burns}.</p>"
        )
    return (
        f'<table class="uptime" style="width:auto"><tr><th>uptime</th>{cells}</tr>'
        f"<tr><td>probes ok</td>{vals}</tr></table>"
        f"<p>latency over 24 h: p50 {ms(s.p50_24h)}, p99 {ms(s.p99_24h)}.</p>{slo}"
    )


def detail_html(row: Row, detail: Detail | None, now: float, refresh: int) -> str:
    e = html.escape
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh) * 6}">'
        f"<title>{e(row.probe)} / {e(row.target)}: {e(row.state)}</title>"
        f"<style>{CSS}</style></head><body>"
        '<p><a href="/status">&larr; all targets</a></p>'
        f'<h1 class="{e(row.state)}">{e(row.probe)}: <span class="target">'
        f"{wrap_target(row.target)}</span></h1>"
        f'<p class="{e(row.state)}">state <span class="state">{e(row.state)}</span> since '
        f"{when(row.since)}"
        + (f"; alert <b>FIRING: {e(row.alert)}</b>" if row.firing else "")
        + (f"; last reason: <b>{e(row.reason)}</b>" if row.reason else "")
        + (f'; last error: <span class="err">{e(row.error)}</span>' if row.error else "")
        + "</p>",
        _uptimes(row.summary),
    ]
    if detail is not None:
        parts.append(latency_chart(detail.day, now - DAY, now, title="latency, last 24 h"))
        parts.append("<br>")
        parts.append(latency_chart(detail.week, now - 7 * DAY, now, title="latency, last 7 days"))
        parts.append(_incidents(detail.incidents))
        parts.append(_failures(detail.failures))
    parts.append("</body></html>")
    return "".join(parts)


def _incidents(incidents: tuple[Incident, ...]) -> str:
    if not incidents:
        return "<h2>Incidents</h2><p>None in the last 90 days.</p>"
    e = html.escape
    rows = "".join(
        f'<tr class="incident"><td>{when(i.start)}</td>'
        f"<td>{when(i.end) if i.end is not None else '<b>ongoing</b>'}</td>"
        f'<td class="num">{_duration((i.end or i.start) - i.start) if i.end else ""}</td>'
        f'<td>{e(i.alert)}</td><td class="err">{e(i.reason or "")}</td></tr>'
        for i in incidents
    )
    return (
        '<h2>Incidents</h2><table class="incidents"><tr><th>start</th><th>end</th>'
        f"<th>lasted</th><th>alert</th><th>reason</th></tr>{rows}</table>"
    )


def _failures(failures: tuple[tuple[int, int, int, str | None], ...]) -> str:
    if not failures:
        return "<h2>Recent failures</h2><p>None kept.</p>"
    e = html.escape
    rows = "".join(
        f'<tr><td>{when(t)}</td><td class="num">{f} of {p}</td>'
        f'<td class="err">{e(reason or "")}</td></tr>'
        for t, p, f, reason in failures
    )
    return (
        '<h2>Recent failures</h2><table class="failures"><tr><th>minute</th><th>failed</th>'
        f"<th>last reason</th></tr>{rows}</table>"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
