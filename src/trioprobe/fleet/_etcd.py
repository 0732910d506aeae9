"""The few etcd v3 calls a fleet makes, over etcd's JSON gateway (``POST /v3/...``) with httpx.

Keys and values are bytes, base64 in JSON, as the gateway wants them. Every call runs under the
client's timeout, so an unreachable or stopped etcd fails a call in bounded time with
:class:`EtcdError` and never hangs an agent. Endpoints are tried in turn, starting from the one
that answered last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from .._etcd_gateway import (
    GatewayClient,
    GatewayError,
    WatchStream,
    b64,
    open_watch,
    post,
    prefix_end,
    prefix_range,
    unb64,
)

__all__ = ["EtcdClient", "EtcdError", "Event", "KeyValue", "prefix_end"]


class EtcdError(Exception):
    """etcd could not be reached, or answered something unexpected."""


@attrs.frozen
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    lease: int = 0


@attrs.frozen
class Event:
    """One watch event: a put (``deleted`` False) or a delete of ``kv.key``."""

    kv: KeyValue
    deleted: bool


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        unb64(raw.get("key", "")),
        unb64(raw.get("value", "")),
        int(raw.get("mod_revision", 0)),
        int(raw.get("lease", 0)),
    )


class EtcdClient(GatewayClient):
    """Leases, a create-if-absent, puts, deletes, prefix ranges and a prefix watch.

    ``writes`` counts the calls that cost etcd a write (lease grants, keep-alives, revokes, puts,
    deletes): the figure a fleet's write rate is measured by.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 2.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.writes = 0
        self._good = 0
        # Each unary call has its own deadline (timeout); the watch stream none on reads.
        super().__init__(
            client, lambda: httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=None))
        )

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``/v3/<path>``; the JSON reply, or :class:`EtcdError` naming what failed."""
        last: str = "no endpoint tried"
        for i in range(len(self.endpoints)):
            index = (self._good + i) % len(self.endpoints)
            url = self.endpoints[index]
            with trio.move_on_after(self.timeout):
                try:
                    reply = await post(self._client, url, path, body)
                except GatewayError as exc:
                    last = str(exc)
                    continue
                self._good = index
                return reply
            last = f"POST {url}/v3/{path}: no answer within {self.timeout}s"
        raise EtcdError(last)

    async def grant(self, ttl: int) -> int:
        self.writes += 1
        reply = await self.call("lease/grant", {"TTL": str(ttl)})
        try:
            return int(reply["ID"])
        except (KeyError, ValueError):
            raise EtcdError(f"lease grant answered {reply!r}") from None

    async def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its remaining TTL in seconds, 0 when it has expired."""
        self.writes += 1
        reply = await self.call("lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", {}).get("TTL", 0) or 0)

    async def time_to_live(self, lease: int) -> int | None:
        """Seconds ``lease`` has left, ``None`` if it has expired."""
        reply = await self.call("lease/timetolive", {"ID": str(lease)})
        ttl = int(reply.get("TTL", -1))
        return ttl if ttl >= 0 else None

    async def revoke(self, lease: int) -> None:
        self.writes += 1
        await self.call("lease/revoke", {"ID": str(lease)})

    async def create(self, key: bytes, value: bytes, lease: int) -> int:
        """Put ``key`` only if it does not exist; the revision of the put, 0 if it exists."""
        self.writes += 1
        body = {
            "compare": [
                {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ],
            "success": [
                {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}
            ],
        }
        reply = await self.call("kv/txn", body)
        if not reply.get("succeeded", False):
            return 0
        return int(reply.get("header", {}).get("revision", 0))

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        self.writes += 1
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        reply = await self.call("kv/put", body)
        return int(reply.get("header", {}).get("revision", 0))

    async def delete(self, key: bytes) -> None:
        self.writes += 1
        await self.call("kv/deleterange", {"key": b64(key)})

    async def delete_if(self, key: bytes, mod_revision: int) -> bool:
        """Delete ``key`` only if it was last written at ``mod_revision``; whether it was."""
        self.writes += 1
        body = {
            "compare": [
                {
                    "key": b64(key),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": str(mod_revision),
                }
            ],
            "success": [{"request_delete_range": {"key": b64(key)}}],
        }
        reply = await self.call("kv/txn", body)
        return bool(reply.get("succeeded", False))

    async def range_prefix(self, prefix: bytes) -> tuple[int, list[KeyValue]]:
        """Every key under ``prefix`` and the revision the answer is as of."""
        reply = await self.call("kv/range", prefix_range(prefix))
        revision = int(reply.get("header", {}).get("revision", 0))
        return revision, [_kv(raw) for raw in reply.get("kvs", ())]

    @asynccontextmanager
    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[_Watch]:
        """A watch on ``prefix`` from ``start_revision``; iterate it for batches of events."""
        url = self.endpoints[self._good]
        async with AsyncExitStack() as stack:
            try:
                stream = await stack.enter_async_context(
                    open_watch(self._client, url, prefix, start_revision, open_within=self.timeout)
                )
            except GatewayError as exc:
                raise EtcdError(str(exc)) from exc
            yield _Watch(stream)


class _Watch:
    """One streaming watch; ``next_batch()`` returns the events of the next non-empty message."""

    def __init__(self, stream: WatchStream) -> None:
        self._stream = stream

    async def next_batch(self) -> list[Event]:
        url = self._stream.url
        while True:
            try:
                result = await self._stream.next_result()
            except GatewayError as exc:
                raise EtcdError(f"watch at {url}: {exc}") from exc
            if result.get("canceled") or int(result.get("compact_revision", 0) or 0):
                raise EtcdError(f"watch at {url} was canceled: {result!r}")
            events = [
                Event(_kv(ev.get("kv", {})), ev.get("type", "PUT") == "DELETE")
                for ev in result.get("events", ())
            ]
            if events:
                return events
