"""EtcdLog: a log kept in etcd's MVCC history, with its watch stream (the v3 JSON gateway)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import trio

from ..._etcd_gateway import (
    GatewayClient,
    GatewayError,
    WatchStream,
    b64,
    open_watch,
    post,
    prefix_end,
    unb64,
)
from ..._tls import ssl_context
from .protocol import Entry, EntrySink, LogTruncatedError, LogUnavailableError, read_with

__all__ = ["EtcdLog", "prefix_end"]

logger = logging.getLogger("trioprobe.logping")


class EtcdLog(GatewayClient):
    """A log kept in etcd's MVCC history, spoken to over the v3 JSON gateway (``/v3/...``).

    ``append`` puts the entry as the value of the key ``prefix + "log"``; the put's
    ``header.revision`` is the entry's index. ``read(start)`` is a watch on the whole prefix from
    ``start_revision``: every put under the prefix is an entry, deletes are ignored. Because the log
    is the history of one key, it does not grow the key space; etcd's compaction is the log's
    truncation, and a watch that starts below the compacted revision fails with
    ``LogTruncatedError``. Revisions count writes to the whole etcd key space, so indexes have gaps.

    ``disconnect()`` breaks the current watch stream; the reader opens a new one from the next
    revision by itself, so no entry is lost. When the server is unreachable or breaks the stream,
    the reader also reconnects by itself every ``reconnect_delay`` seconds (counted in
    ``reconnects``), as the reference's log client does; only truncation is an error for the
    reader. Pass ``reconnect_delay=None`` to get ``LogUnavailableError`` instead.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "trioprobe/logping/",
        *,
        client: httpx.AsyncClient | None = None,
        name: str | None = None,
        reconnect_delay: float | None = 0.2,
    ) -> None:
        self.url = url.rstrip("/")
        self.reconnect_delay = reconnect_delay
        self.reconnects = 0
        self.prefix = prefix.encode()
        self.key = self.prefix + b"log"
        self._name = name or f"etcd:{self.url}/{prefix}"
        # Deadlines come from the caller's cancel scopes; the watch stream must not time out.
        # The process's shared SSL context: a context of its own would cost ~40 ms and ~1 MiB.
        super().__init__(
            client,
            lambda: httpx.AsyncClient(verify=ssl_context(), timeout=httpx.Timeout(10.0, read=None)),
        )
        self._watch_scopes: set[trio.CancelScope] = set()
        self._disconnects = 0

    @property
    def name(self) -> str:
        return self._name

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await post(self._client, self.url, path, body)
        except GatewayError as exc:
            raise LogUnavailableError(f"log {self._name!r}: {exc}") from exc

    def _revision(self, reply: dict[str, Any], path: str) -> int:
        try:
            return int(reply["header"]["revision"])
        except (KeyError, TypeError, ValueError):
            msg = f"log {self._name!r}: POST /v3/{path} reply has no header.revision: {reply!r}"
            raise LogUnavailableError(msg) from None

    async def append(self, data: bytes) -> int:
        reply = await self._post("kv/put", {"key": b64(self.key), "value": b64(data)})
        return self._revision(reply, "kv/put")

    async def next_index(self) -> int:
        reply = await self._post("kv/range", {"key": b64(self.key), "limit": 1, "keys_only": True})
        return self._revision(reply, "kv/range") + 1

    async def compact(self, revision: int) -> None:
        """Discard the history below ``revision`` (etcd compaction); for tests and operators."""
        await self._post("kv/compaction", {"revision": str(revision), "physical": True})

    def disconnect(self) -> None:
        self._disconnects += 1
        for scope in self._watch_scopes:
            scope.cancel()

    def read(
        self, start_index: int
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Entry]]:
        return read_with(lambda send: self._feed(start_index, send))

    async def _feed(self, start_index: int, send: EntrySink) -> None:
        pos = max(start_index, 1)
        while True:
            generation = self._disconnects
            try:
                async with self._watch(pos) as stream:
                    while self._disconnects == generation:
                        # Only the wait for the next batch runs in the scope disconnect()
                        # cancels: an entry being handed to the reader is never lost.
                        with trio.CancelScope() as scope:
                            self._watch_scopes.add(scope)
                            try:
                                batch = await stream.next_batch()
                            finally:
                                self._watch_scopes.discard(scope)
                        if scope.cancelled_caught:
                            break
                        for entry in batch:
                            await send.send(entry)
                            pos = entry.index + 1
                # disconnect() was called: open a new stream from the next revision.
            except LogUnavailableError as exc:
                if self.reconnect_delay is None:
                    raise
                # Like the reference's log client, ride out a server outage: the pinger keeps
                # pinging (and counting failed appends) instead of restarting in a loop.
                self.reconnects += 1
                logger.warning("%s; reconnecting in %ss", exc, self.reconnect_delay)
                await trio.sleep(self.reconnect_delay)

    @asynccontextmanager
    async def _watch(self, start: int) -> AsyncIterator[_Watch]:
        async with AsyncExitStack() as stack:
            try:
                stream = await stack.enter_async_context(
                    open_watch(self._client, self.url, self.prefix, start)
                )
            except GatewayError as exc:
                raise LogUnavailableError(f"log {self.name!r}: {exc}") from exc
            yield _Watch(self.name, stream, start)


class _Watch:
    """One streaming watch of the log; ``next_batch()`` returns the entries of the next event."""

    def __init__(self, name: str, stream: WatchStream, start: int) -> None:
        self.name = name
        self.start = start
        self._stream = stream

    async def next_batch(self) -> list[Entry]:
        while True:
            try:
                result = await self._stream.next_result()
            except GatewayError as exc:
                raise LogUnavailableError(f"log {self.name!r}: {exc}") from exc
            try:
                entries = self._entries(result)
            except (AttributeError, KeyError, TypeError, ValueError):
                # binascii.Error is a ValueError. The gateway broke its protocol: the log's
                # failure, ridden out like a broken stream, not a bug of ours.
                raise LogUnavailableError(
                    f"log {self.name!r}: watch sent a malformed event: {str(result)[:200]}"
                ) from None
            if entries:
                return entries

    def _entries(self, result: dict[str, Any]) -> list[Entry]:
        compacted = int(result.get("compact_revision", 0) or 0)
        if compacted:
            raise LogTruncatedError(self.name, self.start, compacted)
        if result.get("canceled"):
            reason = result.get("cancel_reason", "no reason given")
            raise LogUnavailableError(f"log {self.name!r}: watch canceled: {reason}")
        return [
            Entry(int(ev["kv"]["mod_revision"]), unb64(ev["kv"].get("value", "")))
            for ev in result.get("events", ())
            if ev.get("type", "PUT") == "PUT"
        ]
