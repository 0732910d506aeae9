"""httpx requests whose body httpcore can abandon half-sent without leaving anything behind.

httpx's own body (``json=``/``content=``) is an async generator, and httpcore iterates it
without closing it: when the send of the body fails (the peer resets the connection, which
httpcore swallows to read a reply; or a deadline cancels the send), the generator is left
suspended and Trio warns when it is collected. That ResourceWarning failed soak runs of the
fleet's etcd-restart test and of the InfluxDB outage test. A plain iterator object has nothing
to finalize, so every POST with a body goes through :func:`build_request`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["build_request"]


def build_request(
    client: httpx.AsyncClient, method: str, url: str, *, content: bytes, **kwargs: Any
) -> httpx.Request:
    """``client.build_request(method, url, content=content, **kwargs)``, with a plain body."""
    request = client.build_request(method, url, content=content, **kwargs)
    request.stream = _Body(content)
    return request


class _Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)


class _Once:
    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data
