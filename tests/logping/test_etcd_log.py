"""EtcdLog against a scripted v3 JSON gateway (httpx.MockTransport), under autojump_clock."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from trioprobe.logping import Entry, EtcdLog, LogTruncatedError, LogUnavailableError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def line(result: dict[str, object]) -> bytes:
    return json.dumps({"result": {"header": {"revision": "9"}, **result}}).encode() + b"\n"


def put(rev: int, value: bytes) -> dict[str, object]:
    return {"kv": {"key": b64(b"p/log"), "mod_revision": str(rev), "value": b64(value)}}


class Gateway:
    """Answers put/range/compaction; each watch gets the next scripted stream."""

    def __init__(self, streams: list[list[bytes | float]]) -> None:
        self.streams = streams
        self.requests: list[tuple[str, dict[str, object]]] = []
        self.revision = 9

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        path = request.url.path
        self.requests.append((path, body))
        if path == "/v3/kv/put":
            self.revision += 1
            return httpx.Response(200, json={"header": {"revision": str(self.revision)}})
        if path == "/v3/kv/range":
            return httpx.Response(200, json={"header": {"revision": str(self.revision)}})
        if path == "/v3/watch":
            script = self.streams.pop(0) if self.streams else [3600.0]

            async def stream() -> AsyncIterator[bytes]:
                for item in script:
                    if isinstance(item, float):
                        await trio.sleep(item)
                    else:
                        yield item

            return httpx.Response(200, content=stream())
        return httpx.Response(404, text="no such path")

    def watch_starts(self) -> list[int]:
        return [
            int(b["create_request"]["start_revision"])  # type: ignore[index]
            for p, b in self.requests
            if p == "/v3/watch"
        ]


def make(gateway: Gateway, **kw: object) -> EtcdLog:
    client = httpx.AsyncClient(transport=httpx.MockTransport(gateway))
    return EtcdLog("http://etcd", "p/", client=client, **kw)  # type: ignore[arg-type]


async def take(log: EtcdLog, start: int, n: int) -> list[Entry]:
    out: list[Entry] = []
    async with log.read(start) as entries:
        async for entry in entries:
            out.append(entry)
            if len(out) == n:
                break
    return out


async def test_append_and_next_index(autojump_clock: trio.abc.Clock) -> None:
    gw = Gateway([])
    log = make(gw)
    assert await log.append(b"hello") == 10
    assert await log.next_index() == 11
    path, body = gw.requests[0]
    assert path == "/v3/kv/put"
    assert body == {"key": b64(b"p/log"), "value": b64(b"hello")}
    assert log.name == "etcd:http://etcd/p/"


async def test_watch_yields_puts_and_skips_deletes(autojump_clock: trio.abc.Clock) -> None:
    gw = Gateway(
        [
            [
                line({"created": True}),
                line({"events": [put(10, b"a"), {"type": "DELETE", "kv": {"mod_revision": "11"}}]}),
                b"\n",
                line({"events": [put(12, b"b")]}),
            ]
        ]
    )
    assert await take(make(gw), 10, 2) == [Entry(10, b"a"), Entry(12, b"b")]
    _, body = gw.requests[0]
    assert body["create_request"] == {
        "key": b64(b"p/"),
        "range_end": b64(b"p0"),
        "start_revision": "10",
    }


async def test_compacted_watch_is_truncation(autojump_clock: trio.abc.Clock) -> None:
    gw = Gateway([[line({"created": True}), line({"canceled": True, "compact_revision": "20"})]])
    with pytest.raises(LogTruncatedError) as info:
        await take(make(gw), 5, 1)
    assert (info.value.requested, info.value.first_available) == (5, 20)


async def test_broken_stream_reconnects_from_the_next_revision(
    autojump_clock: trio.abc.Clock,
) -> None:
    gw = Gateway(
        [
            [line({"events": [put(10, b"a")]})],  # then the stream ends (server went away)
            [line({"events": [put(11, b"b")]})],
        ]
    )
    log = make(gw, reconnect_delay=0.5)
    start = trio.current_time()
    assert await take(log, 10, 2) == [Entry(10, b"a"), Entry(11, b"b")]
    assert gw.watch_starts() == [10, 11]
    # 2 when the reader ran on to the second stream's end before the block closed it.
    assert log.reconnects in (1, 2)
    assert trio.current_time() - start == pytest.approx(0.5)


async def test_without_reconnect_a_broken_stream_is_an_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    gw = Gateway([[line({"events": [put(10, b"a")]})]])
    with pytest.raises(LogUnavailableError, match="watch stream ended"):
        await take(make(gw, reconnect_delay=None), 10, 2)


async def test_disconnect_reopens_the_watch(autojump_clock: trio.abc.Clock) -> None:
    gw = Gateway([[line({"events": [put(10, b"a")]}), 3600.0], [line({"events": [put(13, b"c")]})]])
    log = make(gw)
    got: list[Entry] = []

    async def reader() -> None:
        got.extend(await take(log, 10, 2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(1)
        assert got == []
        log.disconnect()
    assert got == [Entry(10, b"a"), Entry(13, b"c")]
    assert gw.watch_starts() == [10, 11]


async def test_http_errors_are_unavailable(autojump_clock: trio.abc.Clock) -> None:
    async def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="etcdserver: no leader")

    log = EtcdLog(
        "http://etcd", "p/", client=httpx.AsyncClient(transport=httpx.MockTransport(down))
    )
    with pytest.raises(LogUnavailableError, match="503: etcdserver: no leader"):
        await log.append(b"x")


async def test_garbage_replies_are_unavailable(autojump_clock: trio.abc.Clock) -> None:
    async def garbage(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/kv/put":
            return httpx.Response(200, text="<html>proxy error</html>")
        return httpx.Response(200, json={"no": "header"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(garbage))
    log = EtcdLog("http://etcd", "p/", client=client)
    with pytest.raises(LogUnavailableError, match="non-JSON"):
        await log.append(b"x")
    with pytest.raises(LogUnavailableError, match=r"no header\.revision"):
        await log.next_index()
    gw = Gateway([[b"not json\n"]])
    with pytest.raises(LogUnavailableError, match="not JSON"):
        await take(make(gw, reconnect_delay=None), 1, 1)
