"""The lean client's raw-socket exchange (``trioprobe._lean_http.H11Client``, shared by the
Prober and the ``http`` probe type): the fast shape, and h11 for everything else.

A scripted loopback server answers each request with given byte pieces (sent apart, so a
reply can arrive split), and counts connections: each test sees which replies keep the
connection and that every shape the fast parser declines still comes out right through h11.
Nothing here depends on timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import h11
import httpx
import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trioprobe._httpbody import BodyTooLarge
from trioprobe._lean_http import H11Client, parse_whole

BODY = b'{"OK":true,"Now":"2024-01-01T00:00:00Z"}'
WHOLE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
HEADERS = [(b"Host", b"peer"), (b"Accept", b"*/*"), (b"User-Agent", b"trioprobe")]


class Scripted:
    """Answers the n-th request with ``replies[n]`` (pieces sent apart), then, with
    ``close_after``, closes the connection; counts connections and requests."""

    def __init__(self, replies: Sequence[Sequence[bytes]], *, close_after: bool = False) -> None:
        self.replies = list(replies)
        self.close_after = close_after
        self.connections = 0
        self.closed = 0
        self.requests: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        try:
            while self.replies:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                request, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(request + b"\r\n\r\n")
                for piece in self.replies.pop(0):
                    await stream.send_all(piece)
                    await trio.sleep(0.01)  # apart: the client reads them in separate recvs
                if self.close_after:
                    return
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()
            self.closed += 1


async def exchanges(script: Scripted, count: int, **kwargs: int) -> list[object]:
    """``count`` GETs over one H11Client: each exchange, or the error it raised."""
    out: list[object] = []
    async with trio.open_nursery() as servers:
        listeners = await servers.start(partial(trio.serve_tcp, script.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        connection = H11Client("127.0.0.1", port, b"/raft/probing", headers=HEADERS, **kwargs)
        for n in range(count):
            with trio.fail_after(10):
                while script.close_after and script.closed < n:  # noqa: ASYNC110
                    await trio.sleep(0.005)  # the peer closed the idle connection: now probe
                try:
                    out.append(await connection.exchange())
                except httpx.HTTPError as exc:
                    out.append(exc)
        await connection.aclose()
        servers.cancel_scope.cancel()
    return out


def test_the_request_is_h11s_encoding() -> None:
    connection = H11Client("127.0.0.1", 1, b"/raft/probing", headers=HEADERS)
    conn = h11.Connection(h11.CLIENT)
    expected = conn.send(h11.Request(method=b"GET", target=b"/raft/probing", headers=HEADERS))
    assert expected is not None
    assert connection.request_bytes() == expected + (conn.send(h11.EndOfMessage()) or b"")


async def test_whole_replies_keep_one_connection_and_only_the_first_has_setup() -> None:
    script = Scripted([[WHOLE]] * 3)
    results = await exchanges(script, 3)
    assert [r.body for r in results] == [BODY] * 3  # type: ignore[attr-defined]
    assert [r.new_connection for r in results] == [True, False, False]  # type: ignore[attr-defined]
    assert results[0].setup_time > 0  # type: ignore[attr-defined]
    assert results[1].setup_time == 0  # type: ignore[attr-defined]
    assert script.connections == 1
    assert script.requests[0].startswith(b"GET /raft/probing HTTP/1.1\r\nHost: peer\r\n")


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([WHOLE[:20], WHOLE[20:]], id="split-head"),
        pytest.param([WHOLE[: -len(BODY)], WHOLE[-len(BODY) :]], id="body-apart"),
        pytest.param(
            [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
            ],
            id="chunked",
        ),
        pytest.param([b"HTTP/1.1 100 Continue\r\n\r\n", WHOLE], id="informational"),
        pytest.param([WHOLE.replace(b"Content-Type", b"Keep-Alive: timeout=5\r\nX")], id="kept"),
    ],
)
async def test_every_other_shape_is_read_by_h11_and_the_connection_kept(
    pieces: list[bytes],
) -> None:
    script = Scripted([pieces, [WHOLE]])
    results = await exchanges(script, 2)
    assert [(r.status, r.body) for r in results] == [(200, BODY)] * 2  # type: ignore[attr-defined]
    assert script.connections == 1


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(WHOLE.replace(b"HTTP/1.1", b"HTTP/1.0"), id="http-1.0"),
        pytest.param(WHOLE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1), id="close"),
        pytest.param(WHOLE + b"HTTP/1.1 200 OK\r\n", id="unasked-bytes"),
    ],
)
async def test_replies_that_end_the_connection_are_read_but_not_reused(reply: bytes) -> None:
    script = Scripted([[reply], [WHOLE]])
    results = await exchanges(script, 2)
    assert [(r.status, r.body) for r in results] == [(200, BODY)] * 2  # type: ignore[attr-defined]
    assert script.connections == 2


async def test_a_peer_closing_the_idle_connection_costs_no_probe() -> None:
    script = Scripted([[WHOLE]] * 3, close_after=True)
    results = await exchanges(script, 3)
    assert all(getattr(r, "status", None) == 200 for r in results), results
    assert script.connections == 3


async def test_a_body_over_the_limit_fails_and_drops_the_connection() -> None:
    script = Scripted([[WHOLE], [WHOLE]])
    results = await exchanges(script, 2, max_body=len(BODY) - 1)
    assert all(isinstance(r, BodyTooLarge) for r in results)
    assert script.connections == 2


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (b"", "RemoteProtocolError"),  # closed instead of answering
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "RemoteProtocolError"),
        (b"garbage\r\n\r\n", "RemoteProtocolError"),
        # More digits than Python's int() takes from a string: h11's error, not a ValueError.
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "RemoteProtocolError"),
    ],
)
async def test_broken_replies_are_typed_errors(reply: bytes, kind: str) -> None:
    script = Scripted([[reply] if reply else []], close_after=True)
    (result,) = await exchanges(script, 1)
    assert type(result).__name__ == kind, result


@pytest.mark.parametrize(
    "reply",
    [
        WHOLE.replace(b"Content-Length: ", b"Content-Length: 1\r\nContent-Length: "),
        WHOLE.replace(b"Content-Length", b"Transfer-Encoding: identity\r\nContent-Length"),
        WHOLE.replace(b"Content-Type", b"Bad Name"),
        WHOLE.replace(b" 200 ", b" 204 "),
        WHOLE[:-1],
        WHOLE + b"x",
        WHOLE.replace(b"Content-Length: %d\r\n" % len(BODY), b""),
        WHOLE.replace(b"Content-Length: %d" % len(BODY), b"Content-Length: " + b"0" * 5000),
        # A head over h11's 16 KiB bound is h11's to refuse (and not scanned here).
        WHOLE.replace(b"Content-Type", b"X-Pad: " + b"p" * 17_000 + b"\r\nContent-Type"),
    ],
)
def test_the_fast_parser_declines_what_h11_must_judge(reply: bytes) -> None:
    assert parse_whole(reply) is None


def test_the_fast_parser_reads_the_common_shape() -> None:
    parsed = parse_whole(WHOLE)
    assert parsed == (
        200,
        "OK",
        [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(BODY))],
        BODY,
    )


def _h11_reads(reply: bytes) -> tuple[int, str, list[tuple[bytes, bytes]], bytes] | None:
    """What h11 makes of ``reply`` to a GET: None unless it is one whole response after which
    both sides keep the connection, with nothing left over."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=b"GET", target=b"/", headers=HEADERS))
    conn.send(h11.EndOfMessage())
    conn.receive_data(reply)
    try:
        head = conn.next_event()
        data = conn.next_event()
        end = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(head, h11.Response) or not isinstance(end, h11.EndOfMessage):
        return None
    if conn.their_state is not h11.DONE or conn.trailing_data[0]:
        return None
    assert isinstance(data, h11.Data)
    return head.status_code, head.reason.decode(), list(head.headers.raw_items()), data.data


_NAMES = st.sampled_from(
    [
        b"Content-Length",
        b"content-LENGTH",
        b"Content-Type",
        b"X-Content-Length",
        b"Server",
        b"Connection",
        b"Transfer-Encoding",
        b"Keep-Alive",
        b"Date",
        b"x",
    ]
)
_VALUES = st.sampled_from([b"", b"2", b" 2 ", b"\t2", b"02", b"2, 2", b"close", b"a b", b"x "])


@settings(max_examples=300, deadline=None)
@example(status=200, fields=[(b"content-LENGTH", b" 2 "), (b"X", b"a b")], body=b"ok")
@given(
    status=st.sampled_from([200, 204, 301, 404, 503]),
    fields=st.lists(st.tuples(_NAMES, _VALUES), max_size=5),
    body=st.sampled_from([b"", b"ok", b"okk"]),
)
def test_the_fast_parser_agrees_with_h11_whenever_it_answers(
    status: int, fields: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Whatever the fast parser accepts, h11 reads the same way (status, reason, headers with
    their values stripped, body) and would keep the connection; it never accepts a reply h11
    would read differently."""
    head = b"HTTP/1.1 %d Fine\r\n" % status + b"".join(b"%s:%s\r\n" % f for f in fields)
    reply = head + b"\r\n" + body
    mine = parse_whole(reply)
    if mine is not None:
        assert mine == _h11_reads(reply)


def test_the_fast_parser_strips_values_as_h11_does() -> None:
    reply = b"HTTP/1.1 200 OK\r\nServer:\t a b \r\ncontent-LENGTH:  2\t\r\n\r\nok"
    assert parse_whole(reply) == _h11_reads(reply)
    assert parse_whole(reply) == (
        200,
        "OK",
        [(b"Server", b"a b"), (b"content-LENGTH", b"2")],
        b"ok",
    )


async def test_closing_the_client_wakes_an_exchange_waiting_for_its_reply() -> None:
    """A target removed while its probe waits for the reply: the probe is woken with a typed
    error, not left parked on a closed socket."""
    asked = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        asked.set()
        await trio.sleep_forever()  # never answers, never closes

    async with trio.open_nursery() as servers:
        listeners = await servers.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        client = H11Client("127.0.0.1", port, b"/", headers=HEADERS)
        outcome: list[BaseException] = []

        async def wait_for_reply() -> None:
            try:
                await client.exchange()
            except httpx.HTTPError as exc:
                outcome.append(exc)

        with trio.fail_after(10):
            async with trio.open_nursery() as probes:
                probes.start_soon(wait_for_reply)
                await asked.wait()
                await client.aclose()
        servers.cancel_scope.cancel()
    assert [type(e).__name__ for e in outcome] == ["ReadError"], outcome
    assert not client.connected
