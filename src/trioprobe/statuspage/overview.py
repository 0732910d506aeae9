"""The overview: one row per target in one column layout for every probe, down targets first.

Filtered (probe, state, text) and paginated on the server from query parameters, so it works
without script: a form of GET fields and plain links. At 5,000 targets a page shows
:data:`PAGE_SIZE` rows; see docs/history.md for the render figures.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping, Sequence
from urllib.parse import urlencode

import attrs

from ..history import Incident, Summary, TargetSummary
from ._common import CSS, Row, detail_href, ms, pct, when, wrap_target
from .svg import day_bar, sparkline

__all__ = ["PAGE_SIZE", "STATES", "DayBars", "Filter", "overview_parts"]

#: Rows per page: 100 rows are ~100 KiB and ~20 ms of rendering (docs/history.md), however
#: many targets there are; down and held targets come first, so page 1 is what matters.
PAGE_SIZE = 100
_DAY = 86400
#: The states a page can filter on.
STATES = ("down", "blocked", "maintenance", "up", "unknown")


@attrs.frozen
class Filter:
    probe: str = ""
    state: str = ""
    text: str = ""
    page: int = 1
    #: One exact target (alert notices link to ``/status?probe=...&target=...``).
    target: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filter:
        try:
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            page = 1
        state = query.get("state", "")
        return cls(
            query.get("probe", ""),
            state if state in STATES else "",
            query.get("q", ""),
            page,
            query.get("target", ""),
        )

    def keep(self, probe: str, target: str, state: str) -> bool:
        """Whether a target with this shown state passes the filter."""
        return (
            (not self.probe or probe == self.probe)
            and (not self.state or state == self.state)
            and (not self.text or self.text.lower() in target.lower())
            and (not self.target or target == self.target)
        )

    def link(self, page: int) -> str:
        args = {"probe": self.probe, "state": self.state, "q": self.text, "target": self.target}
        args["page"] = str(page)
        return "/status?" + urlencode({k: v for k, v in args.items() if v})


_HEAD = (
    '<colgroup><col class="c-probe"><col class="c-target"><col class="c-state">'
    '<col class="c-since"><col class="c-up"><col class="c-up"><col class="c-days">'
    '<col class="c-lat"><col class="c-lat"><col class="c-spark"><col class="c-alert">'
    "</colgroup><tr><th>probe</th><th>target (last error)</th><th>state</th><th>since (UTC)</th>"
    '<th class="num">uptime 24 h</th><th class="num">uptime 30 d</th><th>last 90 days</th>'
    '<th class="num">p50 24 h</th><th class="num">p99 24 h</th><th>last hour</th>'
    "<th>alert</th></tr>"
)


def _form(f: Filter, probes: Sequence[str]) -> str:
    e = html.escape
    options = "".join(
        f'<option value="{e(p)}"{" selected" if p == f.probe else ""}>{e(p)}</option>'
        for p in probes
    )
    states = "".join(
        f'<option value="{s}"{" selected" if s == f.state else ""}>{s}</option>' for s in STATES
    )
    return (
        '<form class="filter" method="get" action="/status">'
        f'<label>probe <select name="probe"><option value="">all</option>{options}</select>'
        f'</label><label>state <select name="state"><option value="">all</option>{states}'
        f'</select></label><label>target contains <input name="q" value="{e(f.text)}">'
        '</label><button type="submit">filter</button></form>'
    )


#: Per (probe, target): day -> the incidents that touch it.
IncidentDays = Mapping[tuple[str, str], Mapping[int, Sequence[Incident]]]


class DayBars:
    """The rendered 90-day bars of one summary (and one UTC day): a bar changes only when the
    summary does (at most once a minute), so a page shown again, or by another viewer, does not
    draw its rows' bars again. Dropped whole when the summary or the day changes."""

    def __init__(self) -> None:
        self._token: tuple[int, int] = (0, 0)
        self._bars: dict[tuple[str, str], str] = {}
        self.incidents: IncidentDays = {}

    def start(self, summary: Summary, today: int) -> None:
        token = (id(summary), today)
        if token != self._token:
            self._token = token
            self._bars = {}
            self.incidents = incidents_by_day(summary.incidents)

    def bar(self, s: TargetSummary, today: int) -> str:
        key = (s.probe, s.target)
        found = self._bars.get(key)
        if found is None:
            incidents = self.incidents.get(key, {})
            found = self._bars[key] = day_bar(s.day_counts(), incidents, today)
        return found


def row_html(row: Row, now: float, today: int, bars: DayBars) -> str:
    e = html.escape
    s = row.summary
    if s is not None:
        up24, up30 = pct(s.uptime("24h")), pct(s.uptime("30d"))
        days = bars.bar(s, today)
        p50, p99 = ms(s.p50_24h), ms(s.p99_24h)
    else:
        # Without [history] (or before its first summary): the last hour, from memory.
        up24 = pct(row.history.success_ratio(now, 3600))
        up30, days = "&ndash;", '<span class="muted">no history</span>'
        p50, p99 = ms(row.history.percentile(0.5)), ms(row.history.percentile(0.99))
    # The last error only while it matters: a recovered target's old error is history.
    # Led by its classified reason (trioprobe.failures), the word an alert route matches on.
    reason = f'<span class="reason">{e(row.reason)}</span>: ' if row.reason else ""
    error = (
        f'<div class="err">{reason}{e(row.error)}</div>' if row.error and row.state != "up" else ""
    )
    cells = [
        f"<td>{e(row.probe)}</td>",
        f'<td class="target"><a href="{e(detail_href(row.probe, row.target))}">'
        f"{wrap_target(row.target)}</a>{error}</td>",
        f'<td class="state">{e(row.state)}</td>',
        f"<td>{when(row.since, zone=False)}</td>",
        f'<td class="num">{up24}</td>',
        f'<td class="num">{up30}</td>',
        f"<td>{days}</td>",
        f'<td class="num">{p50}</td>',
        f'<td class="num">{p99}</td>',
        f"<td>{sparkline(row.history, now)}</td>",
        f"<td>{_alert_cell(row)}</td>",
    ]
    return (
        f'<tr class="{e(row.state)}" data-state="{e(row.state)}" data-probe="{e(row.probe)}" '
        f'data-target="{e(row.target)}">' + "".join(cells) + "</tr>"
    )


def _alert_cell(row: Row) -> str:
    if row.firing:
        return "FIRING: " + html.escape(row.alert)
    if row.alert and row.health == "down" and row.state in ("blocked", "maintenance"):
        return f'<span class="muted">held: {html.escape(row.alert)}</span>'
    return ""


def incidents_by_day(
    incidents: Sequence[Incident],
) -> dict[tuple[str, str], dict[int, list[Incident]]]:
    out: dict[tuple[str, str], dict[int, list[Incident]]] = {}
    for inc in incidents:
        end = inc.end if inc.end is not None else inc.start
        day = int(inc.start // _DAY * _DAY)
        days = out.setdefault((inc.probe, inc.target), {})
        while day <= end:
            days.setdefault(day, []).append(inc)
            day += _DAY
    return out


def overview_parts(
    rows: Sequence[Row],
    matched: int,
    down: int,
    f: Filter,
    probes: Sequence[str],
    summary: Summary,
    refresh: int,
    now: float,
    wall: float,
    bars: DayBars | None = None,
) -> Iterator[str]:
    """The page in pieces: the head, then one piece per row (so the caller can pause)."""
    pages = max(1, -(-matched // PAGE_SIZE))
    yield (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh)}">'
        f"<title>trioprobe status: {down} down</title><style>{CSS}</style></head><body>"
        f"<h1>trioprobe status</h1><p>{down} target(s) down; generated {when(wall)}, "
        f"refreshes every {int(refresh)} s."
        + (f" History as of {when(summary.at)}." if summary.at else "")
        + "</p>"
        + _form(f, probes)
        + f"<p>{matched} target(s) shown"
        + (f", page {f.page} of {pages}" if pages > 1 else "")
        + ".</p>"
    )
    today = int(wall // _DAY * _DAY)
    if bars is None:
        bars = DayBars()
    bars.start(summary, today)
    yield f'<table class="targets">{_HEAD}'
    for row in rows:
        yield row_html(row, now, today, bars)
    yield "</table>"
    if not rows:
        yield "<p>No results yet.</p>" if not matched else ""
    if pages > 1:
        links = "".join(
            f'<a href="{html.escape(f.link(p))}">{p}</a>' if p != f.page else f"<b>{p}</b>"
            for p in range(1, pages + 1)
        )
        yield f'<p class="pages">pages: {links}</p>'
    yield "</body></html>"
