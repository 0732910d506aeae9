"""``trioprobe run --workers N``: the host's one ``/metrics`` URL and one status page, served by
the parent from what its workers serve on their private loopback ports.

Nothing here runs per probe. A scrape of the host fetches each worker's body (each rendered by
the worker, off its loop, at most every half second however many scrapers) and joins them
family by family: the text format wants each family once, so the bytes of worker 2's family
``x`` go after worker 1's, without its ``# HELP``/``# TYPE`` lines. That is a scan for
``# HELP`` lines and slices of bytes, in a worker thread: per scrape and per family, not per
series. Every series a worker exports carries its ``worker`` label, so two workers' series
never collide. The parent adds its own: ``workers``, ``workers_ready{worker}`` and
``workers_restarts_total{worker}``.

The status page: a target's own pages (detail, badges, history, and an alert notice's
``/status?probe=&target=`` link) go to the worker that owns the target, found by the same
rendezvous arithmetic the workers shard by; the JSON lists (``/status.json``,
``/api/v1/targets``, ``/api/v1/incidents``, ``/api/v1/alerts``) are the workers' lists joined;
``/status`` is the host's page (its workers, and every down target); ``/worker/{i}/status`` is
worker i's own overview, filters and pages included.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urljoin

import httpx
import trio

from .._asgi import Receive, Scope, Send, answer_lifespan, send_response
from ..statuspage._common import CSS
from ..statuspage.overview import Filter
from .host_overview import HOST_PAGE_SIZE, merge_page, page_slices, render_overview, worker_query
from .supervisor import Supervisor, WorkerState
from .workers import owner_of, worker_members

__all__ = ["HostMetrics", "HostStatus", "merge_expositions"]

TEXT_FORMAT = b"text/plain; version=0.0.4; charset=utf-8"
_JSON = b"application/json"
_HTML = b"text/html; charset=utf-8"
_PLAIN = b"text/plain; charset=utf-8"
_HELP = re.compile(rb"^# HELP ", re.MULTILINE)
#: A worker's /metrics at 10,000 targets renders in seconds; its status lists are quicker.
_SCRAPE_TIMEOUT = 30.0
_PAGE_TIMEOUT = 15.0
_SEND_SLICE = 65536


def merge_expositions(bodies: Sequence[bytes]) -> bytes:
    """Join text-format bodies so each metric family appears once, in first-seen order."""
    order: list[bytes] = []
    families: dict[bytes, list[bytes]] = {}
    for body in bodies:
        if body and not body.endswith(b"\n"):
            body += b"\n"
        for block in _blocks(body):
            name = block[7 : block.find(b" ", 7)] if block.startswith(b"# HELP ") else b""
            parts = families.get(name)
            if parts is None:
                families[name] = [block]
                order.append(name)
            else:
                parts.append(_samples(block))
    return b"".join(part for name in order for part in families[name])


def _blocks(body: bytes) -> list[bytes]:
    starts = [m.start() for m in _HELP.finditer(body)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    ends = [*starts[1:], len(body)]
    return [body[s:e] for s, e in zip(starts, ends, strict=True) if e > s]


def _samples(block: bytes) -> bytes:
    """``block`` without its leading comment lines (``# HELP``, ``# TYPE``)."""
    i = 0
    while block.startswith(b"#", i):
        newline = block.find(b"\n", i)
        if newline < 0:
            return b""
        i = newline + 1
    return block[i:]


def own_metrics(supervisor: Supervisor, prefix: str) -> bytes:
    """The parent's own families: how many workers, which are ready, how often restarted."""
    p = prefix
    workers = supervisor.workers
    lines = [
        f"# HELP {p}workers Worker processes of this host's `trioprobe run --workers N`.",
        f"# TYPE {p}workers gauge",
        f"{p}workers {len(workers)}",
        f"# HELP {p}workers_ready 1 while the worker is running and answered this scrape.",
        f"# TYPE {p}workers_ready gauge",
        *(f'{p}workers_ready{{worker="{w.index}"}} {int(w.ready)}' for w in workers),
        f"# HELP {p}workers_restarts_total Worker restarts after an unexpected exit.",
        f"# TYPE {p}workers_restarts_total counter",
        *(f'{p}workers_restarts_total{{worker="{w.index}"}} {w.restarts}' for w in workers),
    ]
    return ("\n".join(lines) + "\n").encode()


async def _gather(
    client: httpx.AsyncClient, urls: Sequence[str | None], within: float, **kw: Any
) -> list[httpx.Response | None]:
    """GET (or ``kw``'s request) every URL at once; ``None`` for one that failed."""
    out: list[httpx.Response | None] = [None] * len(urls)

    async def one(i: int, url: str) -> None:
        try:
            out[i] = await client.request(
                kw.get("method", "GET"),
                url,
                timeout=within,
                **{k: v for k, v in kw.items() if k != "method"},
            )
        except httpx.HTTPError:
            out[i] = None

    async with trio.open_nursery() as nursery:
        for i, url in enumerate(urls):
            if url:
                nursery.start_soon(one, i, url)
    return out


def _loopback(host: str) -> bool:
    from ..alerting.api import is_loopback

    return is_loopback(host.strip("[]"))


class HostMetrics:
    """The ASGI app of the host's ``/metrics`` (one per configured prometheus surfacer)."""

    def __init__(
        self,
        supervisor: Supervisor,
        client: httpx.AsyncClient,
        *,
        index: int,
        host: str,
        path: str,
        prefix: str,
    ) -> None:
        self.supervisor = supervisor
        self.client = client
        self.index = index
        self.host = host
        self.path = path
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif scope["path"] == "/-/reload":
            await self._reload(scope, send)
        elif scope["path"] != self.path:
            await send_response(send, 404, b"not found: metrics are at " + self.path.encode())
        elif scope["method"] not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed")
        else:
            body = await self.body()
            await send_response(send, 200, body, TEXT_FORMAT, slice_bytes=_SEND_SLICE)

    async def body(self) -> bytes:
        workers = self.supervisor.workers
        urls = [w.metrics[self.index] if w.ready and w.metrics else None for w in workers]
        # Text format only: the joined body is what every scraper gets.
        answers = await _gather(
            self.client, urls, _SCRAPE_TIMEOUT, headers={"accept": "text/plain"}
        )
        bodies = [a.content for a in answers if a is not None and a.status_code == 200]
        own = own_metrics(self.supervisor, self.prefix)
        merged = await trio.to_thread.run_sync(merge_expositions, bodies)
        return merged + own

    async def _reload(self, scope: Scope, send: Send) -> None:
        """``POST /-/reload``: the same rule as a worker's (loopback bind and client), then each
        worker reloads the config file; 200 only if every one did."""
        client = (scope.get("client") or ("", 0))[0]
        if scope["method"] != "POST":
            await send_response(send, 405, b"method not allowed: POST /-/reload")
            return
        if not (_loopback(self.host) and _loopback(client)):
            await send_response(send, 403, b"forbidden: /-/reload is served to loopback only")
            return
        urls = [
            urljoin(w.metrics[self.index], "/-/reload") if w.metrics else None
            for w in self.supervisor.workers
        ]
        answers = await _gather(self.client, urls, _PAGE_TIMEOUT, method="POST")
        ok = all(a is not None and a.status_code == 200 for a in answers)
        text = "".join(
            f"worker {i}: " + (a.text if a is not None else "no answer\n")
            for i, a in enumerate(answers)
        )
        await send_response(send, 200 if ok else 500, text.encode())


class HostStatus:
    """The ASGI app of the host's status page (see the module doc)."""

    def __init__(
        self, supervisor: Supervisor, client: httpx.AsyncClient, *, writes_open: bool
    ) -> None:
        self.supervisor = supervisor
        self.client = client
        self.members = worker_members(len(supervisor.workers))
        #: Whether to pass on writes (acknowledge): the workers allow them on their loopback
        #: ports without a token, so a public host page without a token must refuse them itself.
        self.writes_open = writes_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, body, ctype = await self._route(scope, receive)
        await send_response(send, status, body, ctype, slice_bytes=_SEND_SLICE)

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        path: str = scope["path"]
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if isinstance(raw, bytes) else path
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        if scope["method"] == "POST" and path.startswith("/api/v1/alerts/"):
            return await self._write(scope, receive, raw_path)
        if scope["method"] not in ("GET", "HEAD"):
            return 405, b"method not allowed", _PLAIN
        if path.startswith("/worker/"):
            return await self._worker_page(raw_path, query)
        owner = self._owner(path, raw_path, query)
        if owner is not None:
            return await self._forward(owner, raw_path, query)
        if path in ("/", "/status", "/status/"):
            return 200, await self._host_page(dict(parse_qsl(query))), _HTML
        if path in ("/status.json", "/api/v1/targets", "/api/v1/incidents", "/api/v1/alerts"):
            return await self._joined(raw_path, query)
        return 404, b"not found: the status page is at /status", _PLAIN

    def _owner(self, path: str, raw_path: str, query: str) -> int | None:
        """The worker a target's own page belongs to, if ``path`` names one."""
        if path in ("/", "/status", "/status/"):
            args = dict(parse_qsl(query))
            if args.get("probe") and args.get("target"):
                return owner_of(args["probe"], args["target"], self.members)
            return None
        for prefix in ("/status/", "/badge/", "/api/v1/targets/"):
            if raw_path.startswith(prefix):
                parts = raw_path[len(prefix) :].split("/")
                if len(parts) >= 2 and parts[0] and parts[1]:
                    return owner_of(unquote(parts[0]), unquote(parts[1]), self.members)
        return None

    def _base(self, worker: WorkerState) -> str | None:
        if not worker.ready or not worker.status:
            return None
        return worker.status.removesuffix("/status")

    async def _forward(self, index: int, raw_path: str, query: str) -> tuple[int, bytes, bytes]:
        base = self._base(self.supervisor.workers[index])
        if base is None:
            return 503, f"worker {index} is restarting; try again shortly".encode(), _PLAIN
        url = base + raw_path + (f"?{query}" if query else "")
        (answer,) = await _gather(self.client, [url], _PAGE_TIMEOUT)
        if answer is None:
            return 502, f"worker {index} did not answer".encode(), _PLAIN
        ctype = answer.headers.get("content-type", "text/plain").encode("latin-1")
        return answer.status_code, answer.content, ctype

    async def _worker_page(self, raw_path: str, query: str) -> tuple[int, bytes, bytes]:
        index_text, _, rest = raw_path[len("/worker/") :].partition("/")
        workers = self.supervisor.workers
        if not index_text.isdigit() or int(index_text) >= len(workers):
            return 404, b"not found: no such worker", _PLAIN
        return await self._forward(int(index_text), "/" + rest, query)

    async def _joined(self, raw_path: str, query: str) -> tuple[int, bytes, bytes]:
        urls = [
            (base + raw_path + (f"?{query}" if query else "")) if base else None
            for base in (self._base(w) for w in self.supervisor.workers)
        ]
        answers = await _gather(self.client, urls, _PAGE_TIMEOUT)
        bodies = [a.content for a in answers if a is not None and a.status_code == 200]
        if not bodies:
            return 503, json.dumps({"error": "no worker answered"}).encode(), _JSON
        return 200, await trio.to_thread.run_sync(_join_json, bodies), _JSON

    async def _write(
        self, scope: Scope, receive: Receive, raw_path: str
    ) -> tuple[int, bytes, bytes]:
        """An acknowledgement: every worker is asked (only the owner knows the alert)."""
        if not self.writes_open:
            return 403, b"forbidden: set [status] token_env or token_file to allow writes", _PLAIN
        body = await _read_body(receive)
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k.lower() in (b"authorization", b"content-type")
        }
        urls = [(b + raw_path) if b else None for b in map(self._base, self.supervisor.workers)]
        answers = await _gather(
            self.client, urls, _PAGE_TIMEOUT, method="POST", content=body, headers=headers
        )
        got = [a for a in answers if a is not None]
        best = next((a for a in got if a.is_success), None) or next(
            (a for a in got if a.status_code != 404), None
        )
        if best is None:
            return 404, json.dumps({"error": "no such firing alert"}).encode(), _JSON
        return best.status_code, best.content, _JSON

    async def _host_page(self, args: dict[str, str]) -> bytes:
        """The workers, then one page of all their targets merged (fleet/host_overview.py):
        the lengths of each worker's runs, then from each the slice that falls on the page."""
        workers = self.supervisor.workers
        query = Filter.from_query(args)
        bases = [self._base(w) for w in workers]
        filters = worker_query(query)
        answers = await self._targets(bases, [{**filters, "limit": "0"}] * len(bases))
        runs = {i: a["groups"] for i, a in enumerate(answers) if a is not None}
        start = (query.page - 1) * HOST_PAGE_SIZE
        slices = {s.worker: s for s in page_slices(runs, start, HOST_PAGE_SIZE)}
        wanted = [
            {**filters, "offset": str(slices[i].offset), "limit": str(slices[i].limit)}
            if i in slices
            else None
            for i in range(len(bases))
        ]
        got = await self._targets(bases, wanted)
        rows = {i: a["targets"] for i, a in enumerate(got) if a is not None}
        page = merge_page(runs, start, HOST_PAGE_SIZE, rows)
        counted = [a for a in answers if a is not None]
        overview = render_overview(
            query,
            page,
            matched=sum(a["matched"] for a in counted),
            down=sum(a["down"] for a in counted),
            probes=list(dict.fromkeys(p for a in counted for p in a["probes"])),
            missing=[i for i, a in enumerate(answers) if a is None],
        )
        down = sum(a["down"] for a in counted)
        return _host_html(workers, overview, down, trio.current_time()).encode()

    async def _targets(
        self, bases: Sequence[str | None], queries: Sequence[dict[str, str] | None]
    ) -> list[dict[str, Any] | None]:
        """``/api/v1/targets?QUERY`` of each worker (``None`` where not asked or no answer)."""
        urls = [
            f"{base}/api/v1/targets?{urlencode(q)}" if base and q is not None else None
            for base, q in zip(bases, queries, strict=True)
        ]
        answers = await _gather(self.client, urls, _PAGE_TIMEOUT)
        out: list[dict[str, Any] | None] = []
        for answer in answers:
            try:
                ok = answer is not None and answer.status_code == 200
                out.append(answer.json() if answer is not None and ok else None)
            except ValueError:
                out.append(None)
        return out


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _join_json(bodies: Sequence[bytes]) -> bytes:
    """One object from the workers' objects: their lists joined, the first one's other keys."""
    joined: dict[str, Any] = {}
    for body in bodies:
        for key, value in json.loads(body).items():
            if isinstance(value, list) and isinstance(joined.get(key, []), list):
                joined.setdefault(key, []).extend(value)
            else:
                joined.setdefault(key, value)
    return json.dumps(joined).encode()


def _host_html(workers: Sequence[WorkerState], overview: str, down: int, now: float) -> str:
    rows = "".join(
        f"<tr><td>{w.index}</td><td>{w.pid or ''}</td>"
        f"<td>{'running' if w.ready else 'restarting'}</td>"
        f"<td class=num>{(now - w.since) if w.ready else 0:.0f} s</td>"
        f"<td class=num>{w.restarts}</td><td>{html.escape(w.last_exit)}</td>"
        f'<td><a href="/worker/{w.index}/status">its own page</a></td></tr>'
        for w in workers
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="5">'
        f"<title>trioprobe host: {down} down</title><style>{CSS}</style></head><body>"
        f"<h1>trioprobe on this host: {len(workers)} workers</h1>"
        "<table><tr><th>worker</th><th>pid</th><th>state</th><th>up for</th>"
        f"<th>restarts</th><th>last exit</th><th></th></tr>{rows}</table>"
        f"{overview}</body></html>"
    )
