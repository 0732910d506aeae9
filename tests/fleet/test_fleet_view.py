"""The fleet view of the status page (``/fleet``, ``/fleet.json``): two runners on one fake
etcd gateway under the MockClock; the view is asked through its ASGI app."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from trioprobe.runner import Runner
from trioprobe.statuspage import fleet as fleet_view
from trioprobe.statuspage.fleet import FleetView

from .fake_etcd import FakeEtcd
from .test_runner_fleet import TARGETS, _config, _fake_type, fake

__all__ = ["_fake_type", "fake"]  # the fixtures, used by name


async def _get(app: Any, path: str, query: str = "") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode()}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"inner"})


async def test_any_agent_shows_every_member_target_owner_and_verdict(
    autojump_clock: Any, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    runners = {n: Runner(_config(n, replicas=2)) for n in "xyz"}
    for runner in runners.values():
        await nursery.start(runner.run)
    await trio.sleep(5)
    agent = runners["x"].fleet
    assert agent is not None
    view = FleetView(agent, _not_found)
    status, body = await _get(view, "/fleet.json")
    assert status == 200
    data = json.loads(body)
    assert [m["agent"] for m in data["members"]] == ["x", "y", "z"]
    # Every (probe, target) has 2 owners, so the shard sizes add up to 2 per target.
    assert sum(m["shard_size"] for m in data["members"]) == 2 * len(TARGETS)
    assert all(m["lease_left"] is not None and m["lease_age"] is not None for m in data["members"])
    assert data["targets_total"] == len(TARGETS)
    assert sorted(t["target"] for t in data["targets"]) == sorted(TARGETS)
    for t in data["targets"]:
        assert len(t["owners"]) == 2
        assert {o["verdict"] for o in t["owners"]} == {"up"}
    # y votes t0 down: every agent's view shows it, and ?state=down lists only it.
    runners["y"].fleet.membership.set_vote("p", "t0", True)  # type: ignore[union-attr]
    await trio.sleep(1)
    _, body = await _get(view, "/fleet.json", "state=down")
    down = json.loads(body)
    assert [(t["target"], t["down_votes"]) for t in down["targets"]] == [("t0", ["y"])]
    for owner in down["targets"][0]["owners"]:
        assert owner["verdict"] == ("down" if owner["agent"] == "y" else "up")
    status, page = await _get(view, "/fleet")
    assert status == 200
    assert b"3 live member(s)" in page
    assert page.count(b"<tr class=") == len(TARGETS)
    # Other paths are the status page's.
    assert await _get(view, "/status") == (404, b"inner")
    for runner in runners.values():
        runner.shutdown()


async def test_the_targets_are_paginated(
    autojump_clock: Any, nursery: trio.Nursery, fake: FakeEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_view, "TARGETS_PAGE", 5)
    runner = Runner(_config("x"))
    await nursery.start(runner.run)
    await trio.sleep(2)
    assert runner.fleet is not None
    view = FleetView(runner.fleet, _not_found)
    pages = []
    for page in (1, 2, 3, 4):
        _, body = await _get(view, "/fleet.json", f"page={page}")
        pages.append([t["target"] for t in json.loads(body)["targets"]])
    assert [len(p) for p in pages] == [5, 5, 2, 0]
    assert sorted(t for p in pages for t in p) == sorted(TARGETS)
    _, html = await _get(view, "/fleet")
    assert b'href="/fleet?page=3"' in html
    runner.shutdown()
