"""The host page of ``run --workers N``: every worker's targets merged into one order, a page at
a time, from one slice per worker (fleet/host_overview.py), and the workers' slice answers."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import httpx
import pytest
import trio

from trioprobe.alerting import Health
from trioprobe.fleet.host import HostStatus
from trioprobe.fleet.host_overview import HOST_PAGE_SIZE, merge_page, page_slices
from trioprobe.fleet.supervisor import Supervisor
from trioprobe.results import ProbeResult
from trioprobe.statuspage import StatusPage


def _brute(runs: dict[int, list[list[int]]]) -> list[tuple[int, int]]:
    """The merged order, (worker, index in its list), by sorting every row."""
    rows = []
    for worker, worker_runs in runs.items():
        index = 0
        for state_rank, probe_rank, count in worker_runs:
            for _ in range(count):
                rows.append(((state_rank, probe_rank, worker, index), (worker, index)))
                index += 1
    return [r for _, r in sorted(rows)]


def _random_runs(rng: random.Random, workers: int) -> dict[int, list[list[int]]]:
    runs = {}
    for w in range(workers):
        keys = sorted(rng.sample([(s, p) for s in range(3) for p in range(3)], rng.randint(0, 6)))
        runs[w] = [[s, p, rng.randint(1, 40)] for s, p in keys]
    return runs


@pytest.mark.parametrize("seed", range(20))
def test_each_page_is_one_slice_per_worker_of_the_merged_order(seed: int) -> None:
    rng = random.Random(seed)
    runs = _random_runs(rng, rng.randint(1, 4))
    merged = _brute(runs)
    lists = {w: [{"w": w, "i": i} for i in range(sum(r[2] for r in rs))] for w, rs in runs.items()}
    for start in range(0, len(merged) + 10, 7):
        size = rng.randint(1, 30)
        window = merged[start : start + size]
        slices = page_slices(runs, start, size)
        for s in slices:
            mine = [i for w, i in window if w == s.worker]
            assert mine == list(range(s.offset, s.offset + s.limit))
        assert sum(s.limit for s in slices) == len(window)
        rows = {s.worker: lists[s.worker][s.offset : s.offset + s.limit] for s in slices}
        page = merge_page(runs, start, size, rows)
        assert [(w, row["i"]) for w, row in page] == window


def test_a_slice_shorter_than_asked_leaves_rows_out_rather_than_misplacing_them() -> None:
    runs = {0: [[0, 0, 3]], 1: [[0, 0, 2]]}
    # Worker 0's list shrank between the counts and the slice: its missing rows are skipped.
    page = merge_page(runs, 0, 10, {0: [{"i": 0}], 1: [{"i": 0}, {"i": 1}]})
    assert page == [(0, {"i": 0}), (1, {"i": 0}), (1, {"i": 1})]


def _health(prefix: str, down: int, up: int) -> Health:
    health = Health()
    for _ in range(3):
        for i in range(down):
            health.feed("web", ProbeResult(f"http://{prefix}-down-{i}/", False, error="refused"))
        for i in range(up):
            health.feed("web", ProbeResult(f"http://{prefix}-up-{i}/", True, 0.001))
    return health


async def _get(app: Any, path: str, query: str = "") -> tuple[int, str]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]).decode()


async def test_a_worker_answers_a_slice_of_its_overview_order_with_its_runs(
    autojump_clock: trio.abc.Clock,
) -> None:
    page = StatusPage(_health("a", 3, 5))
    status, body = await _get(page, "/api/v1/targets")
    everything = [t["target"] for t in json.loads(body)["targets"]]
    status, body = await _get(page, "/api/v1/targets", "limit=0")
    counts = json.loads(body)
    assert status == 200
    assert counts["targets"] == []
    assert (counts["matched"], counts["down"]) == (8, 3)
    # Down first: two runs (state rank 0 then 2), of one probe.
    assert counts["groups"] == [[0, 0, 3], [2, 0, 5]]
    status, body = await _get(page, "/api/v1/targets", "offset=2&limit=3")
    assert [t["target"] for t in json.loads(body)["targets"]] == everything[2:5]
    assert everything[:3] == [f"http://a-down-{i}/" for i in range(3)]
    status, body = await _get(page, "/api/v1/targets", "state=down&limit=0")
    assert json.loads(body)["groups"] == [[0, 0, 3]]


def _host(pages: list[StatusPage]) -> tuple[HostStatus, Supervisor, httpx.AsyncClient]:
    mounts = {f"http://w{i}": httpx.ASGITransport(app=p) for i, p in enumerate(pages)}  # type: ignore[arg-type]
    client = httpx.AsyncClient(mounts=mounts)
    supervisor = Supervisor(lambda i: [], len(pages))
    for i, worker in enumerate(supervisor.workers):
        worker.ready, worker.status, worker.pid = True, f"http://w{i}/status", 100 + i
    return HostStatus(supervisor, client, writes_open=False), supervisor, client


def _listed(body: str) -> list[tuple[str, str]]:
    """(target, worker) of each row of the merged overview."""
    return re.findall(r'<a href="/status/web/[^"]*">([^<]*)</a>.*?/worker/(\d)/status', body)


async def test_the_host_page_merges_every_workers_targets_down_first_a_page_at_a_time() -> None:
    pages = [StatusPage(_health("a", 2, 90)), StatusPage(_health("b", 3, 60))]
    host, supervisor, client = _host(pages)
    async with client:
        status, first = await _get(host, "/status")
        assert status == 200
        assert "155 target(s), 5 down" in first
        assert "page 1 of 2" in first
        rows = _listed(first)
        assert len(rows) == HOST_PAGE_SIZE
        # Every down target of either worker is on page 1, before any up one.
        assert [t for t, _ in rows[:5]] == [
            "http://a-down-0/",
            "http://a-down-1/",
            "http://b-down-0/",
            "http://b-down-1/",
            "http://b-down-2/",
        ]
        _, second = await _get(host, "/status", "page=2")
        more = _listed(second)
        assert len(more) == 55
        every = [t for t, _ in rows + more]
        assert len(set(every)) == 155
        assert all(w == ("0" if t.startswith("http://a-") else "1") for t, w in rows + more)
        _, downs = await _get(host, "/status", "state=down")
        assert len(_listed(downs)) == 5

        # Worker 1 restarting: its targets are absent and the page says so; back, all again.
        supervisor.workers[1].ready = False
        _, partial = await _get(host, "/status")
        assert "92 target(s), 2 down" in partial
        assert "Not listed: the targets of worker(s) 1" in partial
        assert all(w == "0" for _, w in _listed(partial))
        supervisor.workers[1].ready = True
        _, again = await _get(host, "/status")
        assert _listed(again) == rows
