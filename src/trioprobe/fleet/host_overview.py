"""The host's overview of ``trioprobe run --workers N``: every worker's targets on one page,
in one order (down first, then held, then the rest; by probe within each), a page at a time.

Bounded work per render, however many targets: each worker already sorts its own targets into
runs of equal (state rank, probe rank) (its overview's order), and answers
``/api/v1/targets?limit=0`` with the lengths of those runs. The merged order is every run of
the same key, worker by worker, key after key; so the rows of page P that come from worker i
are one contiguous slice of worker i's own list, and :func:`page_slices` finds it from the run
lengths alone. A render is then two requests per worker (the runs; the slice, at most a page
of rows), and the parent never holds more than one page of rows. The two requests are a few
milliseconds apart: a target that changed state meanwhile may show twice or not at all on
that one render, as on any paginated live list.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import attrs

from ..statuspage.overview import STATES, Filter

__all__ = [
    "HOST_PAGE_SIZE",
    "Slice",
    "merge_page",
    "page_slices",
    "render_overview",
    "worker_query",
]

#: Rows per page of the host's overview (a worker's own overview shows 100 too).
HOST_PAGE_SIZE = 100

#: A run of a worker's list: (state rank, probe rank, how many rows).
Run = Sequence[int]


@attrs.frozen
class Slice:
    """Rows ``offset .. offset + limit`` of worker ``worker``'s list."""

    worker: int
    offset: int
    limit: int


def _blocks(runs: Mapping[int, Sequence[Run]]) -> list[tuple[int, int, int]]:
    """The merged order as blocks ``(worker, offset in its list, length)``: runs of one key,
    worker by worker, key after key (a worker's list has one run per key: it is sorted)."""
    blocks = []
    for worker, worker_runs in runs.items():
        offset = 0
        for state_rank, probe_rank, count in worker_runs:
            blocks.append((state_rank, probe_rank, worker, offset, count))
            offset += count
    blocks.sort(key=lambda b: (b[0], b[1], b[2]))
    return [(w, off, n) for _, _, w, off, n in blocks]


def page_slices(runs: Mapping[int, Sequence[Run]], start: int, size: int) -> list[Slice]:
    """The slice of each worker's list that falls in merged rows ``start .. start + size``.

    ``runs[i]`` is worker i's runs in its list's order. A worker's rows keep their own order in
    the merge, so its part of any window of the merged list is one slice of its list."""
    wanted: dict[int, tuple[int, int]] = {}
    position = 0
    for worker, offset, count in _blocks(runs):
        lo, hi = max(start, position), min(start + size, position + count)
        if lo < hi:
            first = offset + lo - position
            begin, length = wanted.get(worker, (first, 0))
            wanted[worker] = (begin, length + hi - lo)
        position += count
        if position >= start + size:
            break
    return [Slice(w, begin, length) for w, (begin, length) in sorted(wanted.items())]


def merge_page(
    runs: Mapping[int, Sequence[Run]],
    start: int,
    size: int,
    rows: Mapping[int, Sequence[dict[str, Any]]],
) -> list[tuple[int, dict[str, Any]]]:
    """Merged rows ``start .. start + size`` as ``(worker, row)``, from each worker's slice
    (``rows[i]``, as :func:`page_slices` asked for it; shorter if the worker's list shrank
    meanwhile)."""
    taken = dict.fromkeys(rows, 0)
    out: list[tuple[int, dict[str, Any]]] = []
    position = 0
    for worker, _, count in _blocks(runs):
        lo, hi = max(start, position), min(start + size, position + count)
        for _ in range(max(0, hi - lo)):
            got = rows.get(worker, ())
            if taken.get(worker, 0) < len(got):
                out.append((worker, got[taken[worker]]))
                taken[worker] += 1
        position += count
        if position >= start + size:
            break
    return out


def worker_query(f: Filter) -> dict[str, str]:
    """The workers' query of the host page's filters (the page is the host's own)."""
    args = {"probe": f.probe, "state": f.state, "q": f.text, "target": f.target}
    return {k: v for k, v in args.items() if v}


def _segment(text: str) -> str:
    return quote(text, safe="")


def _percent(ratio: Any) -> str:
    return f"{ratio * 100:.2f} %" if isinstance(ratio, (int, float)) else "-"


def _ms(seconds: Any) -> str:
    return f"{seconds * 1e3:.1f} ms" if isinstance(seconds, (int, float)) else "-"


def _row_html(worker: int, row: dict[str, Any]) -> str:
    e = html.escape
    probe, target, state = str(row["probe"]), str(row["target"]), str(row["state"])
    uptime = row.get("uptime") or {}
    link = f"/status/{_segment(probe)}/{_segment(target)}"
    error = f'<div class="err">{e(str(row["error"]))}</div>' if row.get("error") else ""
    return (
        f'<tr class="{e(state)}"><td>{e(probe)}</td><td><a href="{e(link)}">{e(target)}</a>'
        f"{error}</td><td>{e(state)}</td>"
        f'<td class="num">{_percent(uptime.get("24h"))}</td>'
        f'<td class="num">{_ms(row.get("latency_p99_24h"))}</td>'
        f'<td><a href="/worker/{worker}/status">{worker}</a></td></tr>'
    )


def _form(query: Filter, probes: Sequence[str]) -> str:
    e = html.escape
    options = "".join(
        f"<option{' selected' if p == query.probe else ''}>{e(p)}</option>" for p in probes
    )
    states = "".join(
        f"<option{' selected' if s == query.state else ''}>{s}</option>" for s in STATES
    )
    return (
        '<form method="get" action="/status">'
        f'<select name="probe"><option value="">every probe</option>{options}</select> '
        f'<select name="state"><option value="">every state</option>{states}</select> '
        f'<input name="q" value="{e(query.text)}" placeholder="target contains"> '
        '<button type="submit">filter</button></form>'
    )


def render_overview(
    query: Filter,
    page: Sequence[tuple[int, dict[str, Any]]],
    *,
    matched: int,
    down: int,
    probes: Sequence[str],
    missing: Sequence[int],
) -> str:
    """The overview part of the host page: filters, one page of merged rows, page links;
    ``missing`` are the workers that did not answer (restarting): their targets are absent."""
    pages = max(1, -(-matched // HOST_PAGE_SIZE))
    rows = "".join(_row_html(worker, row) for worker, row in page)
    links = []
    if query.page > 1:
        links.append(f'<a href="{html.escape(query.link(query.page - 1))}">previous</a>')
    if query.page < pages:
        links.append(f'<a href="{html.escape(query.link(query.page + 1))}">next</a>')
    absent = (
        "<p class=warn>Not listed: the targets of worker(s) "
        f"{', '.join(map(str, missing))}, which did not answer (restarting?).</p>"
        if missing
        else ""
    )
    return (
        f"<h2>{matched} target(s), {down} down</h2>{_form(query, probes)}{absent}"
        "<table><tr><th>probe</th><th>target (last error)</th><th>state</th>"
        '<th class="num">uptime 24 h</th><th class="num">p99 24 h</th><th>worker</th></tr>'
        f"{rows}</table><p>page {query.page} of {pages} {' '.join(links)}</p>"
    )
