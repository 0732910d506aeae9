"""What the overview, the detail page and the API share: formatting, CSS, the row snapshot."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

import attrs

from ..alerting.history import History
from ..alerting.state import DOWN, TargetHealth
from ..failures import Failure
from ..history import Summary, TargetSummary

__all__ = ["CSS", "Row", "detail_href", "ms", "pct", "snapshot_rows", "when"]

CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;width:100%;background:#fff;table-layout:fixed}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:middle}
th{background:#eee}.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:bold;text-transform:uppercase}
.up .state{color:#1a7f37}.down .state{color:#cf222e}.unknown .state{color:#6e7781}
tr.down{background:#fff0f0}.err{color:#6e7781;overflow-wrap:anywhere}
.target{word-break:normal;overflow-wrap:normal}
.target a{color:inherit}
col.c-probe{width:6em}col.c-state{width:5em}col.c-since{width:9.5em}
col.c-up{width:5.5em}col.c-days{width:284px}col.c-lat{width:5em}col.c-spark{width:132px}
col.c-alert{width:9em}.target .err{font-size:.9em;margin-top:2px}
form.filter{margin:0 0 1em}form.filter input,form.filter select{margin-right:.5em}
.pages a{margin-right:.6em}.muted{color:#6e7781}
"""


def pct(ratio: float | None, digits: int = 2) -> str:
    return "&ndash;" if ratio is None else f"{100 * ratio:.{digits}f}%"


def ms(seconds: float | None) -> str:
    return "&ndash;" if seconds is None else f"{seconds * 1000:.1f} ms"


def when(ts: float, *, zone: bool = True) -> str:
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return text + " UTC" if zone else text


def wrap_target(target: str) -> str:
    """The escaped target with break opportunities after ``/``, ``?``, ``&``, and after ``.``
    or ``:`` followed by a non-digit, so a URL wraps between its parts, never inside a port
    number or an address."""
    out = []
    for i, ch in enumerate(target):
        out.append(html.escape(ch))
        nxt = target[i + 1] if i + 1 < len(target) else ""
        if ch in "/?&" or (ch in ".:" and nxt and not nxt.isdigit()):
            out.append("<wbr>")
    return "".join(out)


def detail_href(probe: str, target: str) -> str:
    return f"/status/{quote(probe, safe='')}/{quote(target, safe='')}"


@attrs.frozen
class Row:
    """One target's live state, copied off the live objects on the loop (the sort key too)."""

    order: tuple[int, int, int]
    probe: str
    target: str
    state: str
    since: float
    alert: str
    firing: bool
    error: str | None
    failures: int
    total: int
    transitions: int
    history: History
    summary: TargetSummary | None
    #: The last failure, classified (trioprobe.failures), and its reason for people.
    failure: Failure | None = None
    reason: str | None = None


def snapshot_rows(
    entries: Sequence[tuple[TargetHealth, History]],
    summary: Summary,
    probe_order: Sequence[str],
    start: int,
    stop: int,
) -> list[Row]:
    """Rows ``start:stop`` of ``entries`` (a :meth:`Health.snapshot`); sort key: down first,
    then config order of the probe, then the order targets were first seen."""
    rank = {p: i for i, p in enumerate(probe_order)}
    return [
        _row(h, history, summary, rank, n)
        for n, (h, history) in enumerate(entries[start:stop], start)
    ]


def _row(h: TargetHealth, history: History, summary: Summary, rank: dict[str, int], n: int) -> Row:
    firing = h.state == DOWN and bool(h.rule.name)
    return Row(
        order=(0 if h.state == DOWN else 1, rank.get(h.probe, len(rank)), n),
        probe=h.probe,
        target=h.target,
        state=h.state,
        since=h.since,
        alert=h.rule.name,
        firing=firing,
        error=h.last_error,
        failures=h.failures,
        total=h.total,
        transitions=h.transitions,
        history=history,
        summary=summary.targets.get((h.probe, h.target)),
        failure=h.last_failure,
        reason=h.last_reason,
    )


def failure_fields(row: Row) -> dict[str, str | None]:
    """The last failure's ``reason`` (a :class:`~trioprobe.failures.FailureReason` value, or
    ``latency``), ``phase`` and ``validator``, for JSON: null when the target never failed."""
    f = row.failure
    if f is None:
        return {"reason": row.reason, "phase": None, "validator": None}
    return {"reason": f.reason.value, "phase": f.phase.value, "validator": f.validator}
