"""The few etcd v3 calls a fleet makes, over etcd's JSON gateway (``POST /v3/...``) with httpx.

Keys and values are bytes, base64 in JSON, as the gateway wants them. Every call runs under the
client's timeout, so an unreachable or stopped etcd fails a call in bounded time with
:class:`EtcdError` and never hangs an agent. Endpoints are tried in turn, starting from the one
that answered last.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        base64.b64decode(raw.get("key", "")),
        base64.b64decode(raw.get("value", "")),
        int(raw.get("mod_revision", 0)),
        int(raw.get("lease", 0)),
    )


def prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


class EtcdClient:
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
        self._own_client = client is None
        # The watch stream must not time out on reads; each unary call has its own deadline.
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=None))

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``/v3/<path>``; the JSON reply, or :class:`EtcdError` naming what failed."""
        last: str = "no endpoint tried"
        for i in range(len(self.endpoints)):
            index = (self._good + i) % len(self.endpoints)
            url = f"{self.endpoints[index]}/v3/{path}"
            with trio.move_on_after(self.timeout):
                try:
                    resp = await self._client.post(url, json=body)
                except httpx.HTTPError as exc:
                    last = f"POST {url}: {exc!r}"
                    continue
                if resp.status_code != 200:
                    last = f"POST {url} answered {resp.status_code}: {resp.text[:200]}"
                    continue
                try:
                    reply: dict[str, Any] = resp.json()
                except ValueError:
                    last = f"POST {url} answered non-JSON: {resp.text[:200]!r}"
                    continue
                self._good = index
                return reply
            last = f"POST {url}: no answer within {self.timeout}s"
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
                {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ],
            "success": [
                {"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}
            ],
        }
        reply = await self.call("kv/txn", body)
        if not reply.get("succeeded", False):
            return 0
        return int(reply.get("header", {}).get("revision", 0))

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        self.writes += 1
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        reply = await self.call("kv/put", body)
        return int(reply.get("header", {}).get("revision", 0))

    async def delete(self, key: bytes) -> None:
        self.writes += 1
        await self.call("kv/deleterange", {"key": _b64(key)})

    async def range_prefix(self, prefix: bytes) -> tuple[int, list[KeyValue]]:
        """Every key under ``prefix`` and the revision the answer is as of."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        reply = await self.call("kv/range", body)
        revision = int(reply.get("header", {}).get("revision", 0))
        return revision, [_kv(raw) for raw in reply.get("kvs", ())]

    @asynccontextmanager
    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[_Watch]:
        """A watch on ``prefix`` from ``start_revision``; iterate it for batches of events."""
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": str(start_revision),
            }
        }
        url = f"{self.endpoints[self._good]}/v3/watch"
        try:
            with trio.fail_after(self.timeout):
                cm = self._client.stream("POST", url, json=body)
                resp = await cm.__aenter__()
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            raise EtcdError(f"cannot open a watch at {url}: {exc!r}") from exc
        watch = _Watch(resp, url)
        try:
            if resp.status_code != 200:
                raise EtcdError(f"watch at {url} answered {resp.status_code}")
            yield watch
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await watch.close()
                await cm.__aexit__(None, None, None)


class _Watch:
    """One streaming watch; ``next_batch()`` returns the events of the next non-empty message."""

    def __init__(self, resp: httpx.Response, url: str) -> None:
        self._resp = resp
        self._url = url
        self._lines = resp.aiter_lines()

    async def close(self) -> None:
        # httpx's line iterator is a chain of async generators that aclose() on the outer one
        # leaves unfinished; closing the response makes the next read fail through the chain.
        await self._resp.aclose()
        try:
            while True:
                await self._lines.__anext__()
        except StopAsyncIteration:
            pass
        except Exception:  # expected: the stream was closed under it
            pass

    async def next_batch(self) -> list[Event]:
        while True:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                raise EtcdError(f"watch at {self._url} ended") from None
            except httpx.HTTPError as exc:
                raise EtcdError(f"watch at {self._url} broke: {exc!r}") from exc
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                raise EtcdError(f"watch at {self._url} sent non-JSON: {line[:200]!r}") from None
            if "error" in msg:
                raise EtcdError(f"watch at {self._url}: {msg['error']}")
            result = msg.get("result", {})
            if result.get("canceled") or int(result.get("compact_revision", 0) or 0):
                raise EtcdError(f"watch at {self._url} was canceled: {result!r}")
            events = [
                Event(_kv(ev.get("kv", {})), ev.get("type", "PUT") == "DELETE")
                for ev in result.get("events", ())
            ]
            if events:
                return events
