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
from ._common import Row, failure_fields, snapshot_rows
from .detail import detail_html, gather
from .overview import PAGE_SIZE, Filter, overview_parts

__all__ = ["StatusPage", "collect_rows", "render_html", "render_json", "select"]

#: Rows rendered between two checkpoints: a row takes ~0.1-0.2 ms.
_ROWS_PER_CHECKPOINT = 8
#: Rows copied off the live state between two checkpoints (a few microseconds each).
_COPY_CHUNK = 256


async def collect_rows(health: Health, summary: Summary, order: Sequence[str]) -> list[Row]:
    entries = health.snapshot()  # a list copy: later chunks see the same targets
    rows: list[Row] = []
    for start in range(0, len(entries), _COPY_CHUNK):
        rows.extend(snapshot_rows(entries, summary, order, start, start + _COPY_CHUNK))
        await trio.lowlevel.checkpoint()
    return rows


def select(rows: Sequence[Row], f: Filter) -> tuple[list[Row], int, int]:
    """The page's rows (down first, probes in config order), how many matched, how many down."""
    kept = sorted((r for r in rows if f.keep(r)), key=lambda r: r.order)
    down = sum(r.state == DOWN for r in rows)
    start = (f.page - 1) * PAGE_SIZE
    return kept[start : start + PAGE_SIZE], len(kept), down


async def select_async(
    rows: Sequence[Row], f: Filter, *, paginate: bool = True
) -> tuple[list[Row], int, int]:
    """:func:`select` in chunks: rows arrive in first-seen order, so grouping them by (down,
    probe rank) and joining the groups is the sort, with a checkpoint every chunk."""
    groups: dict[tuple[int, int], list[Row]] = {}
    down = 0
    for i, r in enumerate(rows, 1):
        down += r.state == DOWN
        if f.keep(r):
            groups.setdefault((r.order[0], r.order[1]), []).append(r)
        if i % _COPY_CHUNK == 0:
            await trio.lowlevel.checkpoint()
    kept = [r for key in sorted(groups) for r in groups[key]]
    if not paginate:
        return kept, len(kept), down
    start = (f.page - 1) * PAGE_SIZE
    return kept[start : start + PAGE_SIZE], len(kept), down


def _probes(rows: Sequence[Row], order: Sequence[str]) -> list[str]:
    seen = list(order)
    for r in rows:
        if r.probe not in seen:
            seen.append(r.probe)
    return seen


def render_html(
    health: Health,
    *,
    refresh: int = 5,
    now: float | None = None,
    summary: Summary = EMPTY_SUMMARY,
    order: Sequence[str] = (),
    query: dict[str, str] | None = None,
) -> str:
    """The whole overview at once (tests, tools); ``now`` is the Trio clock reading."""
    now = trio.current_time() if now is None else now
    entries = health.snapshot()
    rows = snapshot_rows(entries, summary, order, 0, len(entries))
    f = Filter.from_query(query or {})
    page, matched, down = select(rows, f)
    parts = overview_parts(
        page, matched, down, f, _probes(rows, order), summary, refresh, now, time.time()
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


def render_json(health: Health, *, now: float | None = None) -> str:
    """``/status.json``: every target's live state, in the order first seen."""
    now = trio.current_time() if now is None else now
    entries = health.snapshot()
    rows = snapshot_rows(entries, EMPTY_SUMMARY, [], 0, len(entries))
    return "".join(_json_parts(rows, now))


async def _join(parts: Iterator[str]) -> bytes:
    """Join ``parts``, letting other tasks run every few rows (see _ROWS_PER_CHECKPOINT)."""
    out: list[str] = []
    for i, part in enumerate(parts, 1):
        out.append(part)
        if i % _ROWS_PER_CHECKPOINT == 0:
            await trio.lowlevel.checkpoint()
    return "".join(out).encode()


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
    """The ASGI app of the status page (see the module doc)."""

    def __init__(
        self,
        health: Health,
        *,
        refresh: int = 5,
        history: HistoryService | None = None,
        order: Sequence[str] = (),
    ) -> None:
        self.health = health
        self.refresh = refresh
        self.history = history
        self.order = list(order)

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

    async def _route(self, scope: Scope) -> tuple[int, bytes, bytes]:
        path: str = scope["path"]
        query = dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1")))
        if path in ("/status", "/status/", "/"):
            return await self._overview(query)
        if path == "/status.json":
            rows = await collect_rows(self.health, EMPTY_SUMMARY, self.order)
            body = await _join(_json_parts(rows, trio.current_time()))
            return 200, body, api.JSON
        if path == "/api/v1/targets":
            rows = await collect_rows(self.health, self.summary, self.order)
            kept, _, _ = await select_async(rows, Filter.from_query(query), paginate=False)
            return await api.targets_json(kept, self.summary)
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

    async def _overview(self, query: dict[str, str]) -> tuple[int, bytes, bytes]:
        summary = self.summary
        rows = await collect_rows(self.health, summary, self.order)
        f = Filter.from_query(query)
        page, matched, down = await select_async(rows, f)
        parts = overview_parts(
            page,
            matched,
            down,
            f,
            _probes(rows, self.order),
            summary,
            self.refresh,
            trio.current_time(),
            time.time() if self.history is None else self.history.wall(),
        )
        return 200, await _join(parts), b"text/html; charset=utf-8"

    async def _row(self, probe: str, target: str) -> Row | None:
        entries = self.health.snapshot()
        for i, (h, _) in enumerate(entries):
            if h.probe == probe and h.target == target:
                return snapshot_rows(entries, self.summary, self.order, i, i + 1)[0]
        return None

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
