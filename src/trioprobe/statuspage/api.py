"""The JSON API (``/api/v1/...``) and the badges (``/badge/...``): the page's data for programs.

Every handler returns ``(status, body, content type)``; reads of the store go through the
history service's reader thread, and large bodies are encoded in a worker thread.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..history import HistoryService, Summary
from ._common import Row, failure_fields, join_body
from .detail import points
from .svg import badge

__all__ = ["badge_svg", "history_json", "incidents_json", "row_dict", "targets_json"]

Response = tuple[int, bytes, bytes]
JSON = b"application/json"
_MAX_POINTS = 5000


def _error(status: int, message: str) -> Response:
    return status, json.dumps({"error": message}).encode(), JSON


def row_dict(row: Row) -> dict[str, Any]:
    s = row.summary
    out: dict[str, Any] = {
        "probe": row.probe,
        "target": row.target,
        "state": row.state,
        "health": row.health,
        "since": row.since,
        "alert": row.alert,
        "firing": row.firing,
        "error": row.error,
        **failure_fields(row),
        "uptime": None if s is None else {w: s.uptime(w) for w in s.counts},
        "probes": None if s is None else {w: c.probes for w, c in s.counts.items()},
        # Probes kept apart from uptime and SLOs (issue 21): made while a dependency was down,
        # or in a maintenance window that does not count in the SLO.
        "blocked": None if s is None else {w: c.blocked for w, c in s.counts.items()},
        "maintenance": None if s is None else {w: c.maintenance for w, c in s.counts.items()},
        "latency_p50_24h": None if s is None else s.p50_24h,
        "latency_p99_24h": None if s is None else s.p99_24h,
    }
    if s is not None and s.slo is not None:
        out["slo"] = {
            "objective": s.slo,
            "error_budget_remaining": s.budget_remaining,
            "burn_rate": dict(s.burn_rates),
        }
    return out


async def targets_json(rows: Sequence[Row], summary: Summary) -> Response:
    """Every row (no paging: programs want all), encoded a time slice at a time."""

    def parts() -> Iterator[str]:
        yield f'{{"as_of": {json.dumps(summary.at or None)}, "targets": ['
        for i, row in enumerate(rows):
            yield (", " if i else "") + json.dumps(row_dict(row))
        yield "]}"

    return 200, await join_body(parts()), JSON


def _number(query: Mapping[str, str], key: str, default: float) -> float:
    text = query.get(key)
    if text is None or text == "":
        return default
    value = float(text)  # ValueError: the caller answers 400
    if not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number")
    return value


async def history_json(
    history: HistoryService | None, probe: str, target: str, query: Mapping[str, str]
) -> Response:
    if history is None:
        return _error(404, "history is off: add a [history] table to the config")
    now = history.wall()
    try:
        to = _number(query, "to", now)
        frm = _number(query, "from", to - 86400)
        step = _number(query, "step", max(history.step, (to - frm) / 1440))
    except ValueError as exc:
        return _error(400, f"bad query: {exc}; from, to and step are seconds (Unix time)")
    if not frm < to or step < history.step or (to - frm) / step > _MAX_POINTS:
        return _error(
            400,
            f"need from < to, step >= {history.step} s and at most {_MAX_POINTS} points",
        )
    step = int(math.ceil(step / history.step) * history.step)

    def read(store: Any) -> tuple[list[Any], bool]:
        known = store.target(probe, target)
        if known is None:
            return [], False
        tid, bounds = known
        rows = store.rows(tid, frm, to, store.watermarks())
        return points(rows, bounds, frm, to, step), True

    pts, found = await history.read(read)
    if not found:
        return _error(404, "no history for this probe and target")
    doc = {
        "probe": probe,
        "target": target,
        "from": frm,
        "to": to,
        "step": step,
        "points": [
            {
                "t": t,
                "probes": p,
                "successes": s,
                "uptime": s / p if p else None,
                "latency_mean": lat if s else None,
                "latency_p50": p50,
                "latency_p99": p99,
            }
            for t, p, s, lat, p50, p99 in pts
        ],
    }
    return 200, json.dumps(doc).encode(), JSON


async def incidents_json(history: HistoryService | None, query: Mapping[str, str]) -> Response:
    if history is None:
        return _error(404, "history is off: add a [history] table to the config")
    try:
        since = _number(query, "from", history.wall() - 7 * 86400)
    except ValueError as exc:
        return _error(400, f"bad query: {exc}")
    probe, target = query.get("probe"), query.get("target")
    found = await history.read(lambda store: store.incidents(since, None, 10000))
    doc = {
        "incidents": [
            {"probe": p, "target": t, "start": s, "end": e, "reason": r, "alert": a}
            for p, t, s, e, r, a in found
            if (probe is None or p == probe) and (target is None or t == target)
        ]
    }
    return 200, json.dumps(doc).encode(), JSON


_GREEN, _YELLOW, _RED, _GREY, _BLUE = "#4c1", "#dfb317", "#e05d44", "#9f9f9f", "#007ec6"


def badge_svg(kind: str, row: Row | None, probe: str) -> Response:
    if row is None:
        return 404, badge(probe, "unknown target", _GREY).encode(), b"image/svg+xml"
    s = row.summary
    if kind == "status":
        color = {"up": _GREEN, "down": _RED, "blocked": _YELLOW, "maintenance": _BLUE}.get(
            row.state, _GREY
        )
        svg = badge("status", row.state, color)
    elif kind == "uptime-24h":
        up = None if s is None else s.uptime("24h")
        if up is None:
            svg = badge("uptime 24h", "no data", _GREY)
        else:
            color = _GREEN if up >= 0.999 else _YELLOW if up >= 0.99 else _RED
            svg = badge("uptime 24h", f"{100 * up:.2f}%", color)
    elif kind == "p99-24h":
        p99 = None if s is None else s.p99_24h
        svg = badge("p99 24h", "no data" if p99 is None else f"{p99 * 1000:.1f} ms", _BLUE)
    else:
        return 404, b"badges: uptime-24h.svg, status.svg, p99-24h.svg", b"text/plain"
    return 200, svg.encode(), b"image/svg+xml"
