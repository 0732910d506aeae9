"""The fleet view of a fleet agent's status page: ``/fleet`` (HTML) and ``/fleet.json``.

Any agent shows the whole fleet: the live members (zone, weight, version, up for, the age and
time left of their lease, and their shard size: how many (probe, target) keys they own among
the targets this agent knows), then every target with its owners in rendezvous order (the first
one notifies) and each owner's verdict (``down`` while it holds a down vote in etcd).

Bounded work per render, whatever the fleet's size: members and targets are paginated
(:data:`MEMBERS_PAGE`, :data:`TARGETS_PAGE`; ``?page=`` and ``?members=``), etcd is asked one
range of the members' keys and one lease query per member shown, and the shard sizes are
counted from the ownership tables the agent keeps anyway (no key is scored for a render), a
chunk at a time with checkpoints between. ``?state=down`` lists only the targets some owner
votes down (from the vote mirror, at most a page of them).
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

import trio

from .._asgi import ASGIApp, Receive, Scope, Send, send_response
from ..fleet._etcd import EtcdError
from ._common import CSS

if TYPE_CHECKING:
    from ..fleet.agent import FleetAgent

__all__ = ["MEMBERS_PAGE", "TARGETS_PAGE", "FleetView", "fleet_data"]

MEMBERS_PAGE = 50
TARGETS_PAGE = 200
#: Keys counted between two checkpoints when summing shard sizes (~0.1 µs each).
_COUNT_CHUNK = 5000


def _page(query: Mapping[str, str], key: str) -> int:
    try:
        return max(1, int(query.get(key, "1")))
    except ValueError:
        return 1


async def _shard_sizes(agent: FleetAgent) -> Counter[str]:
    sizes: Counter[str] = Counter()
    for assigned in list(agent.ownership.assignments().values()):
        owners = list(assigned.values())
        for start in range(0, len(owners), _COUNT_CHUNK):
            for names in owners[start : start + _COUNT_CHUNK]:
                sizes.update(names)
            await trio.lowlevel.checkpoint()
    return sizes


async def _leases(agent: FleetAgent, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each named member's lease: ``left`` and ``age`` (since its last keep-alive), in seconds;
    empty when etcd cannot be asked (the page still shows the mirror)."""
    membership, etcd = agent.membership, agent.etcd
    out: dict[str, dict[str, Any]] = {}
    try:
        _, kvs = await etcd.range_prefix(membership.prefix + b"members/")
        leases = {kv.key.rsplit(b"/", 1)[-1].decode(errors="replace"): kv.lease for kv in kvs}
        for name in names:
            lease = leases.get(name)
            if not lease:
                continue
            reply = await etcd.call("lease/timetolive", {"ID": str(lease)})
            left, granted = int(reply.get("TTL", -1)), int(reply.get("grantedTTL", 0))
            if left >= 0:
                out[name] = {"left": left, "age": max(0, granted - left)}
    except EtcdError:
        pass  # etcd unreachable: the page still shows the mirror, without lease figures
    return out


async def _target_rows(
    agent: FleetAgent, query: Mapping[str, str]
) -> tuple[list[dict[str, Any]], int]:
    """The page's targets (probe, target, owners, each owner's verdict) and how many in all."""
    votes = agent.membership.votes
    page = _page(query, "page")
    start = (page - 1) * TARGETS_PAGE
    known = agent.ownership.assignments()
    keys: Iterator[tuple[str, str]]
    if query.get("state") == "down":
        total = len(votes)
        keys = islice(iter(list(votes)), start, start + TARGETS_PAGE)
    else:
        total = sum(len(owners) for owners in known.values())
        keys = islice(((p, a) for p, o in known.items() for a in o), start, start + TARGETS_PAGE)
    rows = []
    for i, (probe, target) in enumerate(keys):
        down = votes.get((probe, target), {})
        owners = known.get(probe, {}).get(target)
        if owners is None:  # a vote on a target this agent does not list: score it
            owners = agent.ownership.owners(probe, target)
            if i % 16 == 15:
                await trio.lowlevel.checkpoint()
        rows.append(
            {
                "probe": probe,
                "target": target,
                "owners": [{"agent": o, "verdict": "down" if o in down else "up"} for o in owners],
                "down_votes": sorted(down),
            }
        )
    return rows, total


async def fleet_data(agent: FleetAgent, query: Mapping[str, str]) -> dict[str, Any]:
    """What ``/fleet.json`` answers (and ``/fleet`` renders)."""
    membership = agent.membership
    infos = {name: info for name, (info, _) in membership.members.items()}
    names = sorted(infos)
    mpage = _page(query, "members")
    shown = names[(mpage - 1) * MEMBERS_PAGE : mpage * MEMBERS_PAGE]
    sizes = await _shard_sizes(agent)
    leases = await _leases(agent, shown)
    now = time.time()
    members = [
        {
            "agent": name,
            "zone": infos[name].zone,
            "weight": infos[name].weight,
            "version": infos[name].version,
            "up_for": max(0.0, now - infos[name].started) if infos[name].started else None,
            "lease_left": leases.get(name, {}).get("left"),
            "lease_age": leases.get(name, {}).get("age"),
            "shard_size": sizes.get(name, 0),
            "status_url": infos[name].status_url,
        }
        for name in shown
    ]
    targets, total = await _target_rows(agent, query)
    return {
        "fleet": agent.spec.name,
        "agent": agent.name,
        "connected": membership.connected,
        "replicas": agent.spec.replicas,
        "members_total": len(names),
        "members": members,
        "targets_total": total,
        "targets": targets,
    }


def _num(value: object, unit: str = "") -> str:
    return (
        "&ndash;"
        if value is None
        else f"{value:.0f}{unit}"
        if isinstance(value, float)
        else f"{value}{unit}"
    )


def _links(query: Mapping[str, str], key: str, pages: int) -> str:
    if pages <= 1:
        return ""
    current = _page(query, key)
    parts = []
    for n in range(1, pages + 1):
        href = "/fleet?" + urlencode({**query, key: str(n)})
        parts.append(f"<b>{n}</b>" if n == current else f'<a href="{html.escape(href)}">{n}</a>')
    return f'<p class="pages">{key}: {" ".join(parts)}</p>'


def fleet_html(data: Mapping[str, Any], query: Mapping[str, str]) -> Iterator[str]:
    """The page in pieces (the caller joins them with checkpoints between)."""
    e = html.escape
    yield (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>fleet {e(data['fleet'])}</title><style>{CSS}</style></head><body>"
        f"<h1>fleet {e(data['fleet'])}: {data['members_total']} live member(s)</h1>"
        f"<p>seen by {e(data['agent'])}"
        + ("" if data["connected"] else " (etcd unreachable: the last view)")
        + f'; replicas {data["replicas"]}. <a href="/status">this agent\'s targets</a></p>'
        "<table><tr><th>agent</th><th>zone</th><th>weight</th><th>version</th>"
        '<th class="num">up for</th><th class="num">lease age</th>'
        '<th class="num">lease left</th><th class="num">shard size</th></tr>'
    )
    for m in data["members"]:
        yield (
            f"<tr><td>{e(m['agent'])}</td><td>{e(m['zone'])}</td><td>{m['weight']:g}</td>"
            f"<td>{e(m['version'])}</td><td class=num>{_num(m['up_for'], ' s')}</td>"
            f"<td class=num>{_num(m['lease_age'], ' s')}</td>"
            f"<td class=num>{_num(m['lease_left'], ' s')}</td>"
            f"<td class=num>{m['shard_size']}</td></tr>"
        )
    pages = -(-data["members_total"] // MEMBERS_PAGE)
    yield "</table>" + _links(query, "members", pages)
    down_only = query.get("state") == "down"
    yield (
        f"<h2>{data['targets_total']} target(s)"
        + (" voted down" if down_only else "")
        + "</h2>"
        + (
            '<p><a href="/fleet">all targets</a></p>'
            if down_only
            else '<p><a href="/fleet?state=down">only those voted down</a></p>'
        )
        + "<table><tr><th>probe</th><th>target</th><th>owners (notifier first): verdict</th></tr>"
    )
    for t in data["targets"]:
        owners = ", ".join(
            f'<span class="{o["verdict"]}">{e(o["agent"])}: {o["verdict"]}</span>'
            for o in t["owners"]
        )
        href = f"/status/{quote(t['probe'], safe='')}/{quote(t['target'], safe='')}"
        state = "down" if t["down_votes"] else "up"
        yield (
            f'<tr class="{state}"><td>{e(t["probe"])}</td><td class="target">'
            f'<a href="{e(href)}">{e(t["target"])}</a></td><td>{owners}</td></tr>'
        )
    pages = -(-data["targets_total"] // TARGETS_PAGE)
    yield "</table>" + _links(query, "page", pages) + "</body></html>"


class FleetView:
    """Serves ``/fleet`` and ``/fleet.json`` in front of the status page ``inner``."""

    def __init__(self, agent: FleetAgent, inner: ASGIApp) -> None:
        self.agent = agent
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path not in ("/fleet", "/fleet/", "/fleet.json"):
            await self.inner(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed")
            return
        query = dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1")))
        data = await fleet_data(self.agent, query)
        if path == "/fleet.json":
            await send_response(send, 200, json.dumps(data).encode(), b"application/json")
            return
        parts = []
        for i, part in enumerate(fleet_html(data, query)):
            parts.append(part)
            if i % 16 == 15:
                await trio.lowlevel.checkpoint()
        await send_response(send, 200, "".join(parts).encode(), b"text/html; charset=utf-8")
