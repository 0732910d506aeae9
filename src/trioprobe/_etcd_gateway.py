"""etcd's v3 JSON gateway (``POST /v3/...``) spoken once, for every part that talks to etcd.

The fleet's membership (:mod:`trioprobe.fleet._etcd`), the log-ping log
(:mod:`trioprobe.logping.logs.etcd`) and etcd service discovery (:mod:`trioprobe.targets.etcd_sd`)
all need the same three things: a unary call whose reply is JSON, a prefix's key range, and a
streaming watch read line by line. Each raises :class:`GatewayError` with a one-line message;
its callers wrap it in their own error type (``EtcdError``, ``LogUnavailableError``,
``SourceError``), which is where they differ. Keys and values are bytes, base64 in JSON, as the
gateway wants them.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Self

import httpx
import trio

from ._httpx_body import build_request

__all__ = [
    "GatewayClient",
    "GatewayError",
    "WatchStream",
    "b64",
    "open_watch",
    "post",
    "prefix_end",
    "unb64",
]

# A reply (a whole prefix's range) is read in one piece; this bounds it (~100,000 keys).
MAX_REPLY_BYTES = 32 * 1024 * 1024
# Below this a reply is parsed on the event loop (well under a millisecond); above, in a thread.
_PARSE_ON_LOOP = 64 * 1024


class GatewayError(Exception):
    """etcd's gateway could not be reached, refused, or answered something unexpected."""


def _request(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Request:
    """A JSON ``POST`` (its body a plain iterator: see :mod:`trioprobe._httpx_body`)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return build_request(
        client, "POST", url, content=data, headers={"Content-Type": "application/json"}
    )


class GatewayClient:
    """Holds the httpx client a gateway user talks through: the caller's, or its own (made by
    ``make`` only when none is given), which :meth:`aclose` (or leaving ``async with``) closes."""

    def __init__(
        self, client: httpx.AsyncClient | None, make: Callable[[], httpx.AsyncClient]
    ) -> None:
        self._own_client = client is None
        self._client = client if client is not None else make()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # every key


def prefix_range(prefix: bytes) -> dict[str, str]:
    """The ``key``/``range_end`` pair of a request on every key under ``prefix``."""
    return {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}


async def post(
    client: httpx.AsyncClient, url: str, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """``POST {url}/v3/{path}``; the JSON reply, or :class:`GatewayError` saying what failed.

    Deadlines are the caller's cancel scopes. A big reply (a prefix of many keys) is parsed in a
    worker thread: its parse would hold the event loop for milliseconds.
    """
    where = f"POST {url}/v3/{path}"
    try:
        resp = await client.send(_request(client, f"{url}/v3/{path}", body))
    except httpx.HTTPError as exc:
        raise GatewayError(f"{where} failed: {exc!r}") from exc
    if resp.status_code != 200:
        raise GatewayError(f"{where} answered {resp.status_code}: {resp.text[:200]}")
    if len(resp.content) > MAX_REPLY_BYTES:
        raise GatewayError(f"{where}: reply larger than {MAX_REPLY_BYTES} bytes")
    try:
        if len(resp.content) <= _PARSE_ON_LOOP:
            reply = json.loads(resp.content)
        else:
            reply = await trio.to_thread.run_sync(json.loads, resp.content, abandon_on_cancel=True)
    except ValueError:
        raise GatewayError(f"{where} answered non-JSON: {resp.text[:200]!r}") from None
    if not isinstance(reply, dict):
        raise GatewayError(f"{where} answered non-JSON: {resp.text[:200]!r}")
    return reply


class WatchStream:
    """One streaming ``POST /v3/watch``: :meth:`next_result` returns each message's ``result``."""

    def __init__(self, url: str, lines: AsyncIterator[str]) -> None:
        self.url = url
        self._lines = lines

    async def next_result(self) -> dict[str, Any]:
        """The next message's ``result``; :class:`GatewayError` when the stream ends, breaks,
        sends something that is not JSON or reports an error."""
        while True:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                raise GatewayError("the watch stream ended") from None
            except httpx.HTTPError as exc:
                raise GatewayError(f"watch broke: {exc!r}") from exc
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                raise GatewayError(f"watch sent a line that is not JSON: {line[:200]!r}") from None
            if not isinstance(msg, dict):
                raise GatewayError(f"watch sent a line that is not an object: {line[:200]!r}")
            if "error" in msg:
                raise GatewayError(f"watch error: {msg['error']}")
            result = msg.get("result", {})
            return result if isinstance(result, dict) else {}


@asynccontextmanager
async def open_watch(
    client: httpx.AsyncClient,
    url: str,
    prefix: bytes,
    start_revision: int,
    *,
    open_within: float = math.inf,
) -> AsyncIterator[WatchStream]:
    """A watch on every key under ``prefix`` from ``start_revision``.

    Opening it takes at most ``open_within`` seconds (and the caller's cancel scopes); leaving it
    is shielded and bounded (one second), so a reader that leaves on cancellation still
    releases its connection and a server that does not answer cannot hold it up.
    """
    body = {"create_request": {**prefix_range(prefix), "start_revision": str(start_revision)}}
    async with AsyncExitStack() as stack:
        resp: httpx.Response | None = None
        with trio.move_on_after(open_within):
            try:
                resp = await client.send(_request(client, f"{url}/v3/watch", body), stream=True)
            except httpx.HTTPError as exc:
                raise GatewayError(f"cannot open a watch at {url}: {exc!r}") from exc
        if resp is None:
            raise GatewayError(f"cannot open a watch at {url}: no answer within {open_within:g}s")
        stack.push_async_callback(resp.aclose)
        if resp.status_code != 200:
            raise GatewayError(f"watch at {url} answered {resp.status_code}")
        lines = resp.aiter_lines()
        # Runs before the response's own exit, which the stack entered first.
        stack.push_async_callback(_finish_lines, resp, lines)
        held = stack.pop_all()
    try:
        yield WatchStream(url, lines)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await held.aclose()


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
