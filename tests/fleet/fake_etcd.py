"""An in-process fake of etcd's v3 JSON gateway, as an httpx transport, timed by Trio's clock.

Only what the fleet uses: leases (grant, keep-alive, revoke, expiry), put, deleterange, range of a
prefix, a create-if-absent txn, and prefix watches from a revision. ``stop()`` makes every call
fail to connect and ends every watch stream, as a dead etcd does; ``start()`` brings it back with
every lease refreshed, as a restarted etcd does.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import trio


def _b(s: str) -> bytes:
    return base64.b64decode(s)


def _s(b: bytes) -> str:
    return base64.b64encode(b).decode()


@attrs.define
class _Lease:
    ttl: int
    deadline: float


class _Stream(httpx.AsyncByteStream):
    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receive = receive

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._receive:
            yield chunk

    async def aclose(self) -> None:
        await self._receive.aclose()


class FakeEtcd(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.revision = 1
        self.kv: dict[bytes, tuple[bytes, int, int]] = {}  # key -> (value, mod_revision, lease)
        self.leases: dict[int, _Lease] = {}
        self.history: list[tuple[int, dict[str, Any]]] = []
        self.watchers: list[tuple[bytes, bytes, trio.MemorySendChannel[bytes]]] = []
        self.up = True
        self.calls: dict[str, int] = {}
        self._next_lease = 1000

    # --- test controls ----------------------------------------------------------------------

    def stop(self) -> None:
        self.up = False
        for _, _, send in self.watchers:
            send.close()
        self.watchers.clear()

    def start(self) -> None:
        self.up = True
        now = trio.current_time()
        for lease in self.leases.values():
            lease.deadline = now + lease.ttl

    def expire_lease(self, lease_id: int) -> None:
        self._revoke(lease_id)

    def lease_of(self, key: bytes) -> int:
        return self.kv[key][2]

    async def run(self) -> None:
        """Expire leases on time (start it in the test's nursery)."""
        while True:
            await trio.sleep(0.1)
            if self.up:
                self._expire()

    # --- the store ----------------------------------------------------------------------------

    def _expire(self) -> None:
        now = trio.current_time()
        for lease_id, lease in list(self.leases.items()):
            if lease.deadline <= now:
                self._revoke(lease_id)

    def _revoke(self, lease_id: int) -> None:
        self.leases.pop(lease_id, None)
        for key, (_, _, lease) in list(self.kv.items()):
            if lease == lease_id:
                self._delete(key)

    def _event(self, event: dict[str, Any]) -> None:
        self.history.append((self.revision, event))
        key = _b(event["kv"]["key"])
        line = json.dumps({"result": {"events": [event]}}).encode() + b"\n"
        for start, end, send in list(self.watchers):
            if start <= key < end:
                try:
                    send.send_nowait(line)
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    self.watchers.remove((start, end, send))

    def _put(self, key: bytes, value: bytes, lease: int) -> None:
        self.revision += 1
        self.kv[key] = (value, self.revision, lease)
        kv = {"key": _s(key), "value": _s(value), "mod_revision": str(self.revision)}
        if lease:
            kv["lease"] = str(lease)
        self._event({"kv": kv})

    def _delete(self, key: bytes) -> None:
        if key not in self.kv:
            return
        self.revision += 1
        del self.kv[key]
        self._event({"type": "DELETE", "kv": {"key": _s(key), "mod_revision": str(self.revision)}})

    # --- the gateway ----------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        await trio.lowlevel.checkpoint()
        self._expire()
        path = request.url.path.removeprefix("/v3/")
        self.calls[path] = self.calls.get(path, 0) + 1
        body = json.loads(await request.aread())
        if path == "watch":
            return self._watch(body["create_request"])
        reply = getattr(self, "_" + path.replace("/", "_"))(body)
        reply.setdefault("header", {})["revision"] = str(self.revision)
        return httpx.Response(200, json=reply)

    def _lease_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        self._next_lease += 1
        ttl = int(body["TTL"])
        self.leases[self._next_lease] = _Lease(ttl, trio.current_time() + ttl)
        return {"ID": str(self._next_lease), "TTL": str(ttl)}

    def _lease_keepalive(self, body: dict[str, Any]) -> dict[str, Any]:
        lease = self.leases.get(int(body["ID"]))
        if lease is None:
            return {"result": {"ID": body["ID"]}}  # the gateway omits TTL 0
        lease.deadline = trio.current_time() + lease.ttl
        return {"result": {"ID": body["ID"], "TTL": str(lease.ttl)}}

    def _lease_timetolive(self, body: dict[str, Any]) -> dict[str, Any]:
        lease = self.leases.get(int(body["ID"]))
        if lease is None:
            return {"ID": body["ID"], "TTL": "-1"}
        left = max(0, math.ceil(lease.deadline - trio.current_time()))
        return {"ID": body["ID"], "TTL": str(left), "grantedTTL": str(lease.ttl)}

    def _lease_revoke(self, body: dict[str, Any]) -> dict[str, Any]:
        self._revoke(int(body["ID"]))
        return {}

    def _kv_put(self, body: dict[str, Any]) -> dict[str, Any]:
        lease = int(body.get("lease", 0))
        if lease and lease not in self.leases:
            raise ValueError("requested lease not found")
        self._put(_b(body["key"]), _b(body.get("value", "")), lease)
        return {}

    def _kv_deleterange(self, body: dict[str, Any]) -> dict[str, Any]:
        self._delete(_b(body["key"]))
        return {}

    def _kv_range(self, body: dict[str, Any]) -> dict[str, Any]:
        start, end = _b(body["key"]), _b(body["range_end"])
        kvs = [
            {"key": _s(k), "value": _s(v), "mod_revision": str(rev), "lease": str(lease)}
            for k, (v, rev, lease) in sorted(self.kv.items())
            if start <= k < end
        ]
        return {"kvs": kvs, "count": str(len(kvs))}

    def _kv_txn(self, body: dict[str, Any]) -> dict[str, Any]:
        """The two shapes the fleet sends: create-if-absent, and delete-if-unchanged."""
        (compare,) = body["compare"]
        key = _b(compare["key"])
        if compare["target"] == "CREATE":
            holds = key not in self.kv
        else:
            assert (compare["target"], compare["result"]) == ("MOD", "EQUAL")
            holds = key in self.kv and self.kv[key][1] == int(compare["mod_revision"])
        if not holds:
            return {"succeeded": False}
        (op,) = body["success"]
        if "request_delete_range" in op:
            self._delete(_b(op["request_delete_range"]["key"]))
        else:
            put = op["request_put"]
            self._put(_b(put["key"]), _b(put["value"]), int(put.get("lease", 0)))
        return {"succeeded": True}

    def _watch(self, create: dict[str, Any]) -> httpx.Response:
        start, end = _b(create["key"]), _b(create["range_end"])
        send, receive = trio.open_memory_channel[bytes](10_000)
        send.send_nowait(json.dumps({"result": {"created": True}}).encode() + b"\n")
        since = int(create.get("start_revision", 0))
        for revision, event in self.history:
            if revision >= since and start <= _b(event["kv"]["key"]) < end:
                send.send_nowait(json.dumps({"result": {"events": [event]}}).encode() + b"\n")
        self.watchers.append((start, end, send))
        return httpx.Response(200, stream=_Stream(receive))
