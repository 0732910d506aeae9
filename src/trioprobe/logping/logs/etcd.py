"""EtcdLog: a log kept in etcd's MVCC history, with its watch stream (the v3 JSON gateway)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import httpx
import trio

from ..._tls import ssl_context
from .protocol import Entry, EntrySink, LogTruncatedError, LogUnavailableError, read_with

__all__ = ["EtcdLog", "prefix_end"]

logger = logging.getLogger("trioprobe.logping")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # every key


class EtcdLog:
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
        self._own_client = client is None
        # Deadlines come from the caller's cancel scopes; the watch stream must not time out.
        # The process's shared SSL context: a context of its own would cost ~40 ms and ~1 MiB.
        self._client = client or httpx.AsyncClient(
            verify=ssl_context(), timeout=httpx.Timeout(10.0, read=None)
        )
        self._watch_scopes: set[trio.CancelScope] = set()
        self._disconnects = 0

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> EtcdLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._client.post(f"{self.url}/v3/{path}", json=body)
        except httpx.HTTPError as exc:
            msg = f"log {self._name!r}: POST /v3/{path} failed: {exc!r}"
            raise LogUnavailableError(msg) from exc
        if resp.status_code != 200:
            raise LogUnavailableError(
                f"log {self._name!r}: POST /v3/{path} answered {resp.status_code}: "
                f"{resp.text[:200]}"
            )
        try:
            result: dict[str, Any] = resp.json()
        except ValueError:
            msg = f"log {self._name!r}: POST /v3/{path} answered non-JSON: {resp.text[:200]!r}"
            raise LogUnavailableError(msg) from None
        return result

    def _revision(self, reply: dict[str, Any], path: str) -> int:
        try:
            return int(reply["header"]["revision"])
        except (KeyError, TypeError, ValueError):
            msg = f"log {self._name!r}: POST /v3/{path} reply has no header.revision: {reply!r}"
            raise LogUnavailableError(msg) from None

    async def append(self, data: bytes) -> int:
        reply = await self._post("kv/put", {"key": _b64(self.key), "value": _b64(data)})
        return self._revision(reply, "kv/put")

    async def next_index(self) -> int:
        reply = await self._post("kv/range", {"key": _b64(self.key), "limit": 1, "keys_only": True})
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

    def _watch(self, start: int) -> _WatchStream:
        return _WatchStream(self, start)


class _WatchStream:
    """One streaming ``POST /v3/watch``; ``next_batch()`` returns the entries of the next event."""

    def __init__(self, log: EtcdLog, start: int) -> None:
        self.log = log
        self.start = start
        self._stack = AsyncExitStack()
        self._lines: AsyncIterator[str] | None = None

    async def __aenter__(self) -> _WatchStream:
        log = self.log
        body = {
            "create_request": {
                "key": _b64(log.prefix),
                "range_end": _b64(prefix_end(log.prefix)),
                "start_revision": str(self.start),
            }
        }
        async with AsyncExitStack() as stack:
            try:
                resp = await stack.enter_async_context(
                    log._client.stream("POST", f"{log.url}/v3/watch", json=body)
                )
            except httpx.HTTPError as exc:
                msg = f"log {log.name!r}: cannot open a watch: {exc!r}"
                raise LogUnavailableError(msg) from exc
            if resp.status_code != 200:
                raise LogUnavailableError(f"log {log.name!r}: watch answered {resp.status_code}")
            lines = resp.aiter_lines()
            # Runs before the response's own exit, which the stack entered first.
            stack.push_async_callback(_finish_lines, resp, lines)
            self._lines = lines
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # Bounded and shielded: a reader leaving on cancellation must still release the
        # connection, and a server that does not answer must not hold the reader up.
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._stack.__aexit__(*exc)

    async def next_batch(self) -> list[Entry]:
        assert self._lines is not None
        while True:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                msg = f"log {self.log.name!r}: the watch stream ended"
                raise LogUnavailableError(msg) from None
            except httpx.HTTPError as exc:
                raise LogUnavailableError(f"log {self.log.name!r}: watch broke: {exc!r}") from exc
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                raise LogUnavailableError(
                    f"log {self.log.name!r}: watch sent a line that is not JSON: {line[:200]!r}"
                ) from None
            if "error" in msg:
                raise LogUnavailableError(f"log {self.log.name!r}: watch error: {msg['error']}")
            try:
                entries = self._entries(msg)
            except (AttributeError, KeyError, TypeError, ValueError):
                # binascii.Error is a ValueError. The gateway broke its protocol: the log's
                # failure, ridden out like a broken stream, not a bug of ours.
                raise LogUnavailableError(
                    f"log {self.log.name!r}: watch sent a malformed event: {line[:200]!r}"
                ) from None
            if entries:
                return entries

    def _entries(self, msg: dict[str, Any]) -> list[Entry]:
        result = msg.get("result", {})
        compacted = int(result.get("compact_revision", 0) or 0)
        if compacted:
            raise LogTruncatedError(self.log.name, self.start, compacted)
        if result.get("canceled"):
            reason = result.get("cancel_reason", "no reason given")
            raise LogUnavailableError(f"log {self.log.name!r}: watch canceled: {reason}")
        return [
            Entry(int(ev["kv"]["mod_revision"]), base64.b64decode(ev["kv"].get("value", "")))
            for ev in result.get("events", ())
            if ev.get("type", "PUT") == "PUT"
        ]


async def _finish_lines(resp: httpx.Response, lines: AsyncIterator[str]) -> None:
    """Close ``resp`` and run ``lines`` to its end.

    httpx's line iterator is a chain of async generators, and ``aclose()`` on the outer one
    leaves the inner ones unfinished (a ResourceWarning when collected). Closing the response
    first makes the next read fail through the whole chain, which finishes every generator in it.
    """
    await resp.aclose()
    try:
        async for _ in lines:
            pass
    except (httpx.StreamError, httpx.HTTPError):
        pass  # the failure closing the response was meant to cause
