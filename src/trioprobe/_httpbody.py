"""Reading an httpx response body under a size limit, on bytes read and on bytes decompressed.

Why: httpx reads a whole body into memory, and decompresses it whole. A target answering
``Content-Length: 1 GiB`` drove trioprobe to 2.1 GiB RSS and every other target's probes late;
a gzip bomb (a few KiB that inflate to gigabytes) did the same. Here the body is streamed: the
declared length, the bytes read and the bytes decompressed are each checked against the limit,
and decompression itself is bounded (``zlib``'s ``max_length``), so no more than ``limit + 1``
bytes of body are ever held, whatever the peer sends. The lean path (:mod:`trioprobe.probes.
_lean_http`) applies the same limit with the same words.

Only ``gzip`` and ``deflate`` are decoded (what the probes ask for); a body in another
encoding is kept as it came (bounded by the bytes read).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Callable

import httpx

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_BODY_BYTES",
    "BodyTooLarge",
    "decode_body",
    "read_body",
    "send_bounded",
]

#: The largest response body a probe reads (after decompression), unless configured.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: What the httpx path asks for: the encodings :func:`read_body` can decode under a bound.
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(httpx.ReadError):
    """A response body over the limit; read no further. An ``httpx.ReadError``, so callers that
    handle httpx's errors handle it, worded like the lean path's."""

    def __init__(self, limit: int, what: str = "response body") -> None:
        super().__init__(f"{what} larger than the {limit}-byte limit")
        self.limit = limit


Decoder = Callable[[bytes, int], bytes]


class _Inflate:
    """A bounded zlib decoder: ``decode(data, room)`` returns at most ``room`` bytes."""

    def __init__(self, wbits: int, *, raw_fallback: bool = False) -> None:
        self._z = zlib.decompressobj(wbits)
        self._fallback = raw_fallback
        self._started = False

    def __call__(self, data: bytes, room: int) -> bytes:
        try:
            out = self._z.decompress(data, room)
        except zlib.error as exc:
            if self._fallback and not self._started:
                # "deflate" is sent both zlib-wrapped (RFC) and raw (common): httpx tries both.
                self._z, self._fallback = zlib.decompressobj(-zlib.MAX_WBITS), False
                return self(data, room)
            raise httpx.DecodingError(f"cannot decode the response body: {exc}") from None
        self._started = True
        # ``room`` is one past what the limit allows: filling it (more output waits in
        # ``unconsumed_tail``) is what puts the body over the limit.
        return out


def _decoder(encoding: str) -> Decoder | None:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return _Inflate(zlib.MAX_WBITS | 32)
    if encoding == "deflate":
        return _Inflate(zlib.MAX_WBITS, raw_fallback=True)
    return None  # identity, or an encoding we did not ask for: kept as it came


def decode_body(content: bytes, encoding: str, limit: int = MAX_BODY_BYTES) -> bytes:
    """``content`` decoded per its ``Content-Encoding``, never more than ``limit`` bytes of it
    (:class:`BodyTooLarge`): for a body read whole elsewhere (the lean path)."""
    decode = _decoder(encoding)
    if decode is None:
        return content
    data = decode(content, limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(limit, "decompressed response body")
    return data


async def read_body(response: httpx.Response, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read a streamed response's body (decoded) and store it as ``response.content``.

    Raises :class:`BodyTooLarge` as soon as the declared length, the bytes read or the bytes
    decoded pass ``limit``; the caller closes the response (dropping its connection).
    """
    if response.is_stream_consumed:
        # Read already (a caller's transport built it with ``content=``): only the limit left.
        if len(response.content) > limit:
            raise BodyTooLarge(limit)
        return response.content
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    decode = _decoder(response.headers.get("content-encoding", ""))
    parts: list[bytes] = []
    size = 0
    too_large: BodyTooLarge | None = None
    chunks = response.aiter_raw()
    async for raw in chunks:
        if response.num_bytes_downloaded > limit:
            too_large = BodyTooLarge(limit)
        else:
            data = decode(raw, limit - size + 1) if decode is not None else raw
            size += len(data)
            if size > limit:
                what = "decompressed response body" if decode else "response body"
                too_large = BodyTooLarge(limit, what)
            parts.append(data)
        if too_large is not None:
            await _abandon(response, chunks)
            raise too_large
    body = b"".join(parts)
    # What httpx's own ``aread()`` stores: ``.content``, ``.text`` and ``.json()`` read it.
    response._content = body
    return body


async def _abandon(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Stop reading a body part-way: close the response (httpcore drops the connection, an
    unfinished body cannot be reused), then run its stream generators to their end, which now
    comes at once (a read on a closed stream). Leaving them suspended instead would leave
    httpx's and httpcore's nested generators to the garbage collector, half-run."""
    await response.aclose()
    with contextlib.suppress(httpx.HTTPError, httpx.StreamError):
        async for _ in chunks:
            break  # a closed stream should not yield; if it does, stop anyway


async def send_bounded(
    client: httpx.AsyncClient, request: httpx.Request, limit: int = MAX_BODY_BYTES
) -> httpx.Response:
    """``client.send(request)`` with the body read by :func:`read_body` (no redirects followed:
    the caller follows them, one bounded exchange at a time)."""
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        await read_body(response, limit)
    finally:
        await response.aclose()
    return response
