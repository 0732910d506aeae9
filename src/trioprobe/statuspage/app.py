"""``StatusPage``: the ASGI app serving the overview, the detail pages, the API and badges.

Routes (GET/HEAD): ``/status`` (overview; ``?probe=&state=&q=&page=``), ``/status/{probe}/
{target}`` (detail), ``/status.json`` (the live state, as before), ``/api/v1/targets``,
``/api/v1/targets/{probe}/{target}/history?from=&to=&step=``, ``/api/v1/incidents``,
``/badge/{probe}/{target}/{uptime-24h,status,p99-24h}.svg``. A target in a path is one
percent-encoded segment (``%2F`` for ``/``); the page's own links are written that way.

Never one long step on the loop: the live state is copied into immutable rows in chunks with
checkpoints, filtering and sorting run in a worker thread, the page's rows are rendered a few
at a time between checkpoints, and every read of the store is in the history reader thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qsl, unquote

import trio

from .._asgi import Receive, Scope, Send, answer_lifespan, send_response
from ..alerting.health import Health
from ..alerting.state import DOWN
from ..history import EMPTY_SUMMARY, HistoryService, Summary
from . import api
from ._common import (
    _RANK,
    Entry,
    Hold,
    Row,
    Slicer,
    failure_fields,
    join_body,
    make_row,
    shown_state,
    snapshot_rows,
)
from .detail import detail_html, gather
from .overview import PAGE_SIZE, DayBars, Filter, overview_parts

__all__ = ["StatusPage", "copy_rows", "render_html", "render_json", "select_entries"]


async def select_entries(
    health: Health, f: Filter, order: Sequence[str], hold: Hold | None
) -> tuple[list[Entry], int, list[str]]:
    """The entries ``f`` keeps, in page order, how many targets are down, and every probe
    (config order first) for the filter form.

    Only what the filter and the order need is read here (no copies): rows arrive in first-seen
    order, so grouping them by (shown-state rank, probe rank) and joining the groups is the
    sort. The page then copies just its own rows (:func:`make_row`)."""
    rank = {p: i for i, p in enumerate(order)}
    groups: dict[tuple[int, int], list[Entry]] = {}
    down = 0
    probes = dict.fromkeys(order)
    slicer = Slicer()
    for n, (h, history) in enumerate(health.snapshot()):
        probes[h.probe] = None
        state = shown_state(h, hold)
        down += state == DOWN
        if f.keep(h.probe, h.target, state):
            key = (_RANK.get(state, 2), rank.get(h.probe, len(rank)))
            groups.setdefault(key, []).append((n, h, history, state))
        await slicer.tick()
    return [e for key in sorted(groups) for e in groups[key]], down, list(probes)


async def copy_rows(entries: Sequence[Entry], summary: Summary, order: Sequence[str]) -> list[Row]:
    rank = {p: i for i, p in enumerate(order)}
    rows = []
    slicer = Slicer()
    for entry in entries:
        rows.append(make_row(entry, summary, rank))
        await slicer.tick()
    return rows


def render_html(
    health: Health,
    *,
    refresh: int = 5,
    now: float | None = None,
    summary: Summary = EMPTY_SUMMARY,
    order: Sequence[str] = (),
    query: dict[str, str] | None = None,
    hold: Hold | None = None,
) -> str:
    """The whole overview at once (tests, tools); ``now`` is the Trio clock reading."""
    now = trio.current_time() if now is None else now
    entries = health.snapshot()
    rows = snapshot_rows(entries, summary, order, 0, len(entries), hold)
    f = Filter.from_query(query or {})
    kept = sorted((r for r in rows if f.keep(r.probe, r.target, r.state)), key=lambda r: r.order)
    down = sum(r.state == DOWN for r in rows)
    start = (f.page - 1) * PAGE_SIZE
    parts = overview_parts(
        kept[start : start + PAGE_SIZE],
        len(kept),
        down,
        f,
        list(dict.fromkeys([*order, *(r.probe for r in rows)])),
        summary,
        refresh,
        now,
        time.time(),
    )
    return "".join(parts)


def _json_parts(rows: Sequence[Row], now: float) -> Iterator[str]:
    yield '{"targets": ['
    for i, r in enumerate(rows):
        h = r.history
        row = {
            "probe": r.probe,
            "target": r.target,
            "state": r.state,
            "health": r.health,
            "since": r.since,
            "alert": r.alert,
            "firing": r.firing,
            "failures": r.failures,
            "total": r.total,
            "error": r.error,
            **failure_fields(r),
            "transitions": r.transitions,
            "success_ratio_5m": h.success_ratio(now, 300),
            "success_ratio_1h": h.success_ratio(now, 3600),
            "latency_p50": h.percentile(0.5),
            "latency_p99": h.percentile(0.99),
        }
        yield (", " if i else "") + json.dumps(row)
    yield "]}"


def render_json(health: Health, *, now: float | None = None, hold: Hold | None = None) -> str:
    """``/status.json``: every target's live state, in the order first seen."""
    now = trio.current_time() if now is None else now
    entries = health.snapshot()
    rows = snapshot_rows(entries, EMPTY_SUMMARY, [], 0, len(entries), hold)
    return "".join(_json_parts(rows, now))


#: The most rows one ``/api/v1/targets?limit=`` answer carries.
_SLICE_MAX = 1000


def _whole(query: dict[str, str], key: str, default: int) -> int:
    try:
        return max(0, int(query.get(key, default)))
    except ValueError:
        return default


def _pair(scope: Scope, prefix: str, suffix: str) -> tuple[str, str] | None:
    """``(probe, target)`` from a path ``prefix + probe/target + suffix``."""
    raw = scope.get("raw_path")
    text = raw.decode("latin-1") if isinstance(raw, bytes) else scope["path"]
    if not (text.startswith(prefix) and text.endswith(suffix)):
        return None
    middle = text[len(prefix) : len(text) - len(suffix)]
    probe, sep, target = middle.partition("/")
    if not sep or not probe or not target:
        return None
    return (unquote(probe), unquote(target)) if isinstance(raw, bytes) else (probe, target)


class StatusPage:
    """The ASGI app of the status page (see the module doc).

    Args:
        hold: ``hold(alert, probe, target)`` says why a target's notifications are held
            (``"blocked"``, ``"maintenance"``) or ``None``: the page shows that state.
    """

    def __init__(
        self,
        health: Health,
        *,
        refresh: int = 5,
        history: HistoryService | None = None,
        order: Sequence[str] = (),
        hold: Hold | None = None,
    ) -> None:
        self.health = health
        self.refresh = refresh
        self.history = history
        self.order = list(order)
        self.hold = hold
        self._bars = DayBars()

    @property
    def store(self) -> HistoryService | None:
        """The history, if there is one that records (not one that could not open its file)."""
        history = self.history
        return None if history is None or history.disabled else history

    @property
    def summary(self) -> Summary:
        return self.history.summary if self.history is not None else EMPTY_SUMMARY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed")
            return
        status, body, ctype = await self._route(scope)
        await send_response(send, status, body, ctype)

    async def _rows(self, f: Filter, summary: Summary) -> list[Row]:
        entries, _, _ = await select_entries(self.health, f, self.order, self.hold)
        return await copy_rows(entries, summary, self.order)

    async def _route(self, scope: Scope) -> tuple[int, bytes, bytes]:
        path: str = scope["path"]
        query = dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1")))
        if path in ("/status", "/status/", "/"):
            return await self._overview(query)
        if path == "/status.json":
            rows = await self._rows(Filter(), EMPTY_SUMMARY)
            rows.sort(key=lambda r: r.order[2])  # first-seen order, as before
            body = await join_body(_json_parts(rows, trio.current_time()))
            return 200, body, api.JSON
        if path == "/api/v1/targets":
            summary = self.summary
            if "limit" in query:
                return await self._slice(Filter.from_query(query), query, summary)
            rows = await self._rows(Filter.from_query(query), summary)
            return await api.targets_json(rows, summary)
        if path == "/api/v1/incidents":
            return await api.incidents_json(self.store, query)
        pair = _pair(scope, "/api/v1/targets/", "/history")
        if pair is not None:
            return await api.history_json(self.store, *pair, query)
        for kind in ("uptime-24h", "status", "p99-24h"):
            pair = _pair(scope, "/badge/", f"/{kind}.svg")
            if pair is not None:
                return api.badge_svg(kind, await self._row(*pair), pair[0])
        pair = _pair(scope, "/status/", "")
        if pair is not None:
            return await self._detail(*pair)
        return 404, b"not found: the status page is at /status", b"text/plain; charset=utf-8"

    async def _slice(
        self, f: Filter, query: dict[str, str], summary: Summary
    ) -> tuple[int, bytes, bytes]:
        """``/api/v1/targets?limit=L&offset=O`` (and the overview's filters): one slice of the
        overview's order, with the counts a merger of several such lists needs (the host page of
        ``run --workers N`` merges its workers' lists a page at a time: fleet/host_overview.py).
        ``groups`` are ``[state rank, probe rank, count]`` runs, in the list's order."""
        entries, down, probes = await select_entries(self.health, f, self.order, self.hold)
        offset, limit = _whole(query, "offset", 0), min(_whole(query, "limit", 0), _SLICE_MAX)
        rows = await copy_rows(entries[offset : offset + limit], summary, self.order)
        rank = {p: i for i, p in enumerate(self.order)}
        groups: list[list[int]] = []
        slicer = Slicer()
        for _, h, _, state in entries:
            key = [_RANK.get(state, 2), rank.get(h.probe, len(rank))]
            if groups and groups[-1][:2] == key:
                groups[-1][2] += 1
            else:
                groups.append([*key, 1])
            await slicer.tick()
        head = {
            "as_of": summary.at or None,
            "matched": len(entries),
            "down": down,
            "probes": probes,
            "groups": groups,
            "offset": offset,
        }

        def parts() -> Iterator[str]:
            yield json.dumps(head)[:-1] + ', "targets": ['
            for i, row in enumerate(rows):
                yield (", " if i else "") + json.dumps(api.row_dict(row))
            yield "]}"

        return 200, await join_body(parts()), api.JSON

    async def _overview(self, query: dict[str, str]) -> tuple[int, bytes, bytes]:
        summary = self.summary
        f = Filter.from_query(query)
        entries, down, probes = await select_entries(self.health, f, self.order, self.hold)
        start = (f.page - 1) * PAGE_SIZE
        page = await copy_rows(entries[start : start + PAGE_SIZE], summary, self.order)
        parts = overview_parts(
            page,
            len(entries),
            down,
            f,
            probes,
            summary,
            self.refresh,
            trio.current_time(),
            time.time() if self.history is None else self.history.wall(),
            self._bars,
        )
        return 200, await join_body(parts), b"text/html; charset=utf-8"

    async def _row(self, probe: str, target: str) -> Row | None:
        h = self.health.entry(probe, target)
        history = self.health.history(probe, target)
        if h is None or history is None:
            return None
        rank = {p: i for i, p in enumerate(self.order)}
        return make_row((0, h, history, shown_state(h, self.hold)), self.summary, rank)

    async def _detail(self, probe: str, target: str) -> tuple[int, bytes, bytes]:
        row = await self._row(probe, target)
        if row is None:
            return 404, b"not found: no such probe and target", b"text/plain; charset=utf-8"
        detail = None
        now = time.time()
        history = self.store
        if history is not None:
            now = history.wall()
            detail = await history.read(lambda store: gather(store, probe, target, now))
        body = detail_html(row, detail, now, self.refresh)
        return 200, body.encode(), b"text/html; charset=utf-8"
