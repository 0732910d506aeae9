"""``etcd_sd``: every key under a prefix is a target; its value, if any, a JSON object of labels.

Read through etcd's v3 JSON gateway with httpx (as :class:`trioprobe.logping.logs.EtcdLog`):
one ``kv/range`` of the prefix, then a ``watch`` from the next revision, applying each PUT and
DELETE as it comes. If the watch breaks or the endpoint is down, the next endpoint is tried
after a back-off, with a fresh range (so nothing missed while away is lost); meanwhile the last
good targets stay. The address is the key with the prefix removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx
import trio

from .._etcd_gateway import GatewayError, open_watch, post, prefix_range, unb64
from ._model import Target
from ._parse import CheckFn, SourceError, parse_label_object, target_problem
from ._source import Feed, Source

__all__ = ["EtcdSDSource"]

_MAX_BACKOFF = 10.0


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
                except (
                    GatewayError,
                    httpx.HTTPError,
                    SourceError,
                    trio.TooSlowError,
                    ValueError,
                ) as exc:
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
            reply = await post(client, endpoint, "kv/range", prefix_range(self.prefix))
        revision = int(reply.get("header", {}).get("revision", 0))
        self._kvs = {}
        for kv in reply.get("kvs", ()):
            self._put(kv)
        self._publish(feed)
        ready()
        self.watches += 1
        async with open_watch(client, endpoint, self.prefix, revision + 1) as stream:
            while True:
                if self._apply(await stream.next_result()):
                    self._publish(feed)

    def _apply(self, result: dict[str, Any]) -> bool:
        if result.get("compact_revision") or result.get("canceled"):
            raise SourceError("watch canceled (compacted): reading the prefix again")
        events = result.get("events", ())
        for event in events:
            if event.get("type", "PUT") == "PUT":
                self._put(event["kv"])
            else:
                self._kvs.pop(unb64(event["kv"]["key"]), None)
        return bool(events)

    def _put(self, kv: dict[str, Any]) -> None:
        key = unb64(kv["key"])
        address = key[len(self.prefix) :].decode("utf-8", errors="replace")
        if not address:
            return
        address = self.template.replace("{address}", address)
        where = f"etcd key {key.decode('utf-8', errors='replace')!r}"
        try:
            labels = parse_label_object(unb64(kv.get("value", "")), where)
        except SourceError as exc:  # this key is skipped, the others kept
            self._kvs[key] = str(exc)
            return
        problem = target_problem(address, self.check)
        if problem is not None:
            self._kvs[key] = f"{where}: bad target {address!r}: {problem}"
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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    if isinstance(exc, SourceError | GatewayError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
