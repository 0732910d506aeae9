"""The http probe's lean path (h11 over a Trio TCP stream) against real loopback servers: keep-alive
reuse, reconnects, hostile replies, the body limit, timeouts, no fd leaks, no cyclic garbage.

The tests of the probe's options and validators run on both paths (tests/probes_types/
test_http_options.py); these are the lean path's own. ``fail_after`` is only a hang guard.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from types import FrameType
from typing import Any

import pytest
import trio

from trioprobe.metrics import Distribution, Map
from trioprobe.probes._http_targets import H11Target, HttpxTarget
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.results import ProbeResult
from trioprobe.testing import assert_no_leaks

from ..probing.test_http_transport import _serve_h11

GUARD = 30
Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def _serve(nursery: trio.Nursery, handler: Handler) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/health"


def _probe(url: str, **options: Any) -> HTTPProbe:
    return HTTPProbe(Options(**options), lambda: [url], interval=0.05, timeout=10.0)


async def _once(probe: HTTPProbe, url: str) -> ProbeResult:
    with trio.fail_after(GUARD):
        return await probe.probe_once(url)


async def _reply_once(reply: bytes, stream: trio.SocketStream) -> None:
    """Read a request, send ``reply`` as it is, close."""
    try:
        await stream.receive_some(65536)
        await stream.send_all(reply)
    except trio.BrokenResourceError:
        pass
    await stream.aclose()


async def test_keep_alive_connection_is_reused_and_counted(nursery: trio.Nursery) -> None:
    url = await _serve(nursery, _serve_h11)
    probe = _probe(url, detail="full")
    results = [await _once(probe, url) for _ in range(3)]
    assert all(r.success for r in results), [r.error for r in results]
    assert isinstance(probe._clients.get(url), H11Target)  # the h11 path: no httpx client
    first, *later = results
    assert first.extras["connections"] == Map("state", {"new": 1})
    assert set(first.extras) >= {"phase_connect", "phase_send", "phase_ttfb", "phase_transfer"}
    assert "phase_tls" not in first.extras
    assert first.extras["resp-code"] == Map("code", {"200": 1})
    for result in later:
        assert result.extras["connections"] == Map("state", {"reused": 1})
        assert "phase_connect" not in result.extras
        ttfb = result.extras["phase_ttfb"]
        assert isinstance(ttfb, Distribution)
        assert ttfb.count == 1
        assert 0 <= ttfb.sum <= result.latency
    await probe._clients.aclose()


async def test_reconnects_after_the_server_closes_the_connection(nursery: trio.Nursery) -> None:
    """A server that closes after each reply (without saying so): the idle connection is seen to
    be closed before reuse, and a new one is opened; every probe succeeds."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    closed = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await _reply_once(reply, stream)
        closed.set()

    url = await _serve(nursery, handler)
    probe = _probe(url, body_regex="^ok$", detail="full")
    for _ in range(3):
        closed = trio.Event()
        result = await _once(probe, url)
        assert result.success, result.error
        assert result.extras["connections"] == Map("state", {"new": 1})
        with trio.fail_after(GUARD):
            await closed.wait()
        await trio.sleep(0.01)  # let the FIN arrive (a probe that raced it would fail, not hang)
    await probe._clients.aclose()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"garbage\r\n\r\n", "RemoteProtocolError: "),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..", "RemoteProtocolError: "),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "RemoteProtocolError: "),
        (b"", "RemoteProtocolError: Server disconnected without sending a response."),
    ],
    ids=["garbage", "truncated-body", "huge-headers", "closed"],
)
async def test_hostile_replies_fail_the_probe_with_a_clear_error(
    nursery: trio.Nursery, reply: bytes, error: str
) -> None:
    url = await _serve(nursery, partial(_reply_once, reply))
    probe = _probe(url)
    result = await _once(probe, url)
    assert not result.success
    assert (result.error or "").startswith(error), result.error
    # The broken connection is not kept: the next probe opens a new one (and fails the same way).
    state = probe._clients.get(url)
    assert isinstance(state, H11Target)
    assert not state.connected
    await probe._clients.aclose()


async def test_a_body_over_the_limit_fails_the_probe(nursery: trio.Nursery) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    url = await _serve(nursery, partial(_reply_once, reply))
    probe = _probe(url, max_body_bytes=1000)
    result = await _once(probe, url)
    assert not result.success
    assert result.error == "ReadError: response body larger than the 1000-byte limit"


async def test_refused_reads_like_the_httpx_path() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    listener.close()  # nothing listens there now
    errors = []
    for transport in ("auto", "httpx"):
        probe = _probe(url, transport=transport)
        result = await _once(probe, url)
        assert not result.success
        errors.append(result.error)
        await probe._clients.aclose()
    assert errors[0] == errors[1]
    assert (errors[0] or "").startswith("ConnectError: all attempts to connect to 127.0.0.1")


async def test_timeout_mid_body_drops_the_connection(
    nursery: trio.Nursery, autojump_clock: Any
) -> None:
    """A server that sends headers and part of the body, then stalls: the probe's cancel scope
    ends it as a timeout, and the half-read connection is never reused."""
    connections = []

    async def handler(stream: trio.SocketStream) -> None:
        connections.append(stream)
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await trio.sleep_forever()

    url = await _serve(nursery, handler)
    probe = HTTPProbe(Options(), lambda: [url], interval=1.0, timeout=0.5)
    send, receive = trio.open_memory_channel[ProbeResult](10)
    async with trio.open_nursery() as inner:
        await inner.start(probe.run, send)
        first = await receive.receive()
        second = await receive.receive()
        inner.cancel_scope.cancel()
    for result in (first, second):
        assert result.timeout
        assert result.error == "timed out after 0.5s"
    assert len(connections) == 2  # the second probe opened its own connection


async def test_no_fd_leaks_when_targets_go_and_the_probe_stops(nursery: trio.Nursery) -> None:
    url = await _serve(nursery, _serve_h11)
    current = [f"{url}?a", f"{url}?b"]
    seen: dict[str, int] = {}
    async with assert_no_leaks(tasks=False, threads=False):
        probe = HTTPProbe(Options(), lambda: current, interval=0.05, timeout=10.0)
        send, receive = trio.open_memory_channel[ProbeResult](100)
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as inner:
                await inner.start(probe.run, send)
                async for result in receive:
                    assert result.success, result.error
                    seen[result.target] = seen.get(result.target, 0) + 1
                    if len(seen) == 2 and min(seen.values()) >= 2:
                        break
                current.pop()  # target b goes away: its connection is closed
                seen.clear()
                async for result in receive:
                    seen[result.target] = seen.get(result.target, 0) + 1
                    if seen.get(f"{url}?a", 0) >= 3:
                        break
                assert list(probe._clients._clients) == [f"{url}?a"]
                inner.cancel_scope.cancel()


async def test_lean_probes_leave_no_cyclic_garbage(nursery: trio.Nursery) -> None:
    url = await _serve(nursery, _serve_h11)
    probe = _probe(url, json_subset={"OK": True}, header_checks={"Content-Length": ""})
    assert (await _once(probe, url)).success
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            assert (await _once(probe, url)).success
        garbage = gc.collect()
    finally:
        gc.enable()
    assert garbage < 50
    await probe._clients.aclose()


_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"


async def _keep_answering(
    connections: list[int], stream: trio.SocketStream, reply: bytes = _OK
) -> None:
    """Answer every request on the connection with ``reply``, never closing first."""
    connections.append(1)
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            _, _, buffer = buffer.partition(b"\r\n\r\n")
            await stream.send_all(reply)
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


async def test_a_configured_connection_close_is_honoured(nursery: trio.Nursery) -> None:
    """Our own request said ``Connection: close``: even a whole keep-alive-looking reply (the
    fast parser's shape) ends the connection, so the next probe never writes to one the server
    is closing."""
    connections: list[int] = []
    url = await _serve(nursery, partial(_keep_answering, connections))
    probe = _probe(url, headers={"Connection": "close"}, detail="full")
    for _ in range(3):
        result = await _once(probe, url)
        assert result.success, result.error
        assert result.extras["connections"] == Map("state", {"new": 1})
    assert len(connections) == 3
    await probe._clients.aclose()


async def test_a_post_answered_chunked_is_read_by_h11_and_the_connection_kept(
    nursery: trio.Nursery,
) -> None:
    """A reply the fast parser leaves to h11 (chunked), to a request with a body: h11 is put in
    the state of having sent that request (read back from its bytes) and reads it."""
    connections: list[int] = []
    url = await _serve(nursery, partial(_keep_answering, connections, reply=_CHUNKED))
    probe = _probe(url, method="POST", body="hello", body_regex="^ok$", detail="full")
    results = [await _once(probe, url) for _ in range(3)]
    assert [r.success for r in results] == [True] * 3, [r.error for r in results]
    assert [r.extras["connections"] for r in results] == [Map("state", {"new": 1})] + [
        Map("state", {"reused": 1})
    ] * 2
    assert connections == [1]
    await probe._clients.aclose()


async def test_a_request_h11_refuses_fails_every_probe_with_a_typed_error(
    nursery: trio.Nursery,
) -> None:
    """The request is encoded once and kept, but only once h11 accepted it: a body longer than
    the configured Content-Length fails each probe (not the target's set-up) in h11's words."""
    connections: list[int] = []
    url = await _serve(nursery, partial(_keep_answering, connections))
    probe = _probe(url, method="POST", body="hello", headers={"Content-Length": "1"})
    for _ in range(2):
        result = await _once(probe, url)
        assert not result.success
        assert (result.error or "").startswith("LocalProtocolError: "), result.error
    assert connections == []  # nothing was sent: refused before the connect
    await probe._clients.aclose()


async def test_a_steady_probe_costs_a_bounded_number_of_python_calls(
    nursery: trio.Nursery,
) -> None:
    """CPU per probe, counted rather than timed (so no machine load can change the verdict): a
    probe over a kept connection whose reply comes whole with a Content-Length is parsed without
    h11 and costs about 120 calls (it was ~470 through h11 and Trio's stream layer). The least
    of a few probes is taken: a reply split across two reads is h11's, and legitimately dearer."""
    url = await _serve(nursery, _serve_h11)
    probe = _probe(url, detail="full")
    assert (await _once(probe, url)).success  # the connection is open and kept
    this = trio.lowlevel.current_task()
    counts = []
    for _ in range(10):
        calls = 0

        def count(frame: FrameType, event: str, arg: object) -> None:
            # Only this task's calls: the server answering runs in the same process.
            nonlocal calls
            try:
                if trio.lowlevel.current_task() is not this:
                    return
            except RuntimeError:  # the scheduler, between tasks
                return
            calls += event in ("call", "c_call")

        sys.setprofile(count)
        try:
            result = await probe.probe_once(url)
        finally:
            sys.setprofile(None)
        assert result.success, result.error
        counts.append(calls)
    assert min(counts) <= 200, counts
    await probe._clients.aclose()


@pytest.mark.parametrize(
    ("options", "lean"),
    [
        ({}, True),
        ({"transport": "httpx"}, False),
        ({"follow_redirects": True}, False),
    ],
)
def test_which_targets_take_the_lean_path(options: dict[str, Any], lean: bool) -> None:
    probe = HTTPProbe(Options(**options), list, interval=1.0, timeout=1.0)
    assert isinstance(probe._new_target("http://127.0.0.1:1/"), H11Target) is lean
    assert isinstance(probe._new_target("https://127.0.0.1:1/"), HttpxTarget)
    assert isinstance(probe._new_target("http://u:p@127.0.0.1:1/"), HttpxTarget)


def test_transport_key_is_checked() -> None:
    with pytest.raises(ValueError, match="transport: 'h2' is not one of auto, httpx"):
        Options(transport="h2")
