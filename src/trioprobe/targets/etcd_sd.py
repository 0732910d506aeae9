"""``etcd_sd``: every key under a prefix is a target; its value, if any, a JSON object of labels.

Read through etcd's v3 JSON gateway with httpx (as :class:`trioprobe.logping.logs.EtcdLog`):
one ``kv/range`` of the prefix, then a ``watch`` from the next revision, applying each PUT and
DELETE as it comes. If the watch breaks or the endpoint is down, the next endpoint is tried
after a back-off, with a fresh range (so nothing missed while away is lost); meanwhile the last
good targets stay. The address is the key with the prefix removed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import trio

from ._model import Target
from ._parse import CheckFn, SourceError, parse_label_object
from ._source import Feed, Source

__all__ = ["EtcdSDSource"]

_MAX_BACKOFF = 10.0
# A range of the whole prefix is read in one reply; this bounds it (about 100,000 targets).
_MAX_RANGE_BYTES = 32 * 1024 * 1024
# Below this a range reply is parsed at once (well under a millisecond).
_PARSE_ON_LOOP = 64 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class EtcdSDSource(Source):
    kind = "etcd_sd"

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str,
        check: CheckFn | None = None,
        *,
        template: str = "{address}",
        timeout: float = 5.0,
        backoff: float = 1.0,
    ) -> None:
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.prefix = prefix.encode()
        self.check = check
        self.template = template
        self.timeout = timeout
        self.backoff = backoff
        # key -> its target or the reason it was skipped
        self._kvs: dict[bytes, Target | str] = {}
        #: Watches opened (the first, and one per reconnection).
        self.watches = 0

    def describe(self) -> str:
        return f"{','.join(self.endpoints)} prefix {self.prefix.decode(errors='replace')!r}"

    async def watch(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        delay = self.backoff
        attempt = 0
        started = False

        def ready() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        # No client-wide read timeout: a watch is idle between changes by design.
        timeout = httpx.Timeout(self.timeout, read=None)
        async with httpx.AsyncClient(timeout=timeout) as client:
            while True:
                endpoint = self.endpoints[attempt % len(self.endpoints)]
                try:
                    await self._follow(client, endpoint, feed, ready)
                except (httpx.HTTPError, SourceError, trio.TooSlowError, ValueError) as exc:
                    feed.fail(f"etcd {endpoint}: {_reason(exc)}")
                else:
                    delay = self.backoff  # the watch ended cleanly: start over at once
                ready()
                attempt += 1
                await trio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    async def _follow(
        self,
        client: httpx.AsyncClient,
        endpoint: str,
        feed: Feed,
        ready: Callable[[], None],
    ) -> None:
        with trio.fail_after(self.timeout):
            resp = await client.post(
                f"{endpoint}/v3/kv/range",
                json={"key": _b64(self.prefix), "range_end": _b64(prefix_end(self.prefix))},
            )
        reply = await _reply(resp, "kv/range")
        revision = int(reply.get("header", {}).get("revision", 0))
        self._kvs = {}
        for kv in reply.get("kvs", ()):
            self._put(kv)
        self._publish(feed)
        ready()
        body = {
            "create_request": {
                "key": _b64(self.prefix),
                "range_end": _b64(prefix_end(self.prefix)),
                "start_revision": str(revision + 1),
            }
        }
        self.watches += 1
        async with client.stream("POST", f"{endpoint}/v3/watch", json=body) as stream:
            if stream.status_code != 200:
                raise SourceError(f"watch answered {stream.status_code}")
            lines = stream.aiter_lines()
            try:
                async for line in lines:
                    if line.strip() and self._apply(json.loads(line)):
                        self._publish(feed)
            finally:
                await _close_lines(stream, lines)
        raise SourceError("the watch stream ended")

    def _apply(self, message: dict[str, Any]) -> bool:
        if "error" in message:
            raise SourceError(f"watch error: {message['error']}")
        result = message.get("result", {})
        if result.get("compact_revision") or result.get("canceled"):
            raise SourceError("watch canceled (compacted): reading the prefix again")
        events = result.get("events", ())
        for event in events:
            if event.get("type", "PUT") == "PUT":
                self._put(event["kv"])
            else:
                self._kvs.pop(base64.b64decode(event["kv"]["key"]), None)
        return bool(events)

    def _put(self, kv: dict[str, Any]) -> None:
        key = base64.b64decode(kv["key"])
        address = key[len(self.prefix) :].decode("utf-8", errors="replace")
        if not address:
            return
        address = self.template.replace("{address}", address)
        where = f"etcd key {key.decode('utf-8', errors='replace')!r}"
        try:
            labels = parse_label_object(base64.b64decode(kv.get("value", "")), where)
        except SourceError as exc:  # this key is skipped, the others kept
            self._kvs[key] = str(exc)
            return
        try:
            if self.check is not None:
                self.check(address)
        except ValueError as exc:
            self._kvs[key] = f"{where}: bad target {address!r}: {exc}"
            return
        self._kvs[key] = Target(address, labels)

    def _publish(self, feed: Feed) -> None:
        targets: dict[str, Target] = {}
        bad: dict[str, str] = {}
        for key in sorted(self._kvs):
            entry = self._kvs[key]
            if isinstance(entry, Target):
                targets.setdefault(entry.address, entry)
            else:
                bad[key.decode("utf-8", errors="replace")] = entry
        feed.publish(tuple(targets.values()), bad)


async def _close_lines(stream: httpx.Response, lines: AsyncIterator[str]) -> None:
    # httpx's line iterator is a chain of async generators that aclose() on the outer one
    # leaves unfinished; closing the response makes the next read end them all (as EtcdLog).
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await stream.aclose()
        try:
            while True:
                await lines.__anext__()
        except StopAsyncIteration:
            pass
        except Exception:  # expected: the stream was closed under it
            pass


async def _reply(resp: httpx.Response, path: str) -> dict[str, Any]:
    if resp.status_code != 200:
        raise SourceError(f"{path} answered {resp.status_code}: {resp.text[:200]}")
    if len(resp.content) > _MAX_RANGE_BYTES:
        raise SourceError(f"{path}: reply larger than {_MAX_RANGE_BYTES} bytes")
    if len(resp.content) <= _PARSE_ON_LOOP:
        reply: dict[str, Any] = json.loads(resp.content)
    else:  # a big prefix: its parse would hold the event loop, so a worker thread does it
        reply = await trio.to_thread.run_sync(json.loads, resp.content, abandon_on_cancel=True)
    return reply


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    if isinstance(exc, SourceError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
