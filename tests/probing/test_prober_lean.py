"""Which connection path the Prober takes, over real loopback sockets.

Plain ``http://`` peers without a caller's client go over one keep-alive h11 connection (the
``http`` probe type's lean path); https and a caller's client stay on httpx. A loopback server
counts the TCP connections it accepts and notes each request's ``User-Agent`` (the lean path
sends ``trioprobe``, httpx ``python-httpx/...``), so each test sees which path served it.

No verdict depends on timing: deadlines are generous, and what is asserted is counts and kinds.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from functools import partial

import h11
import httpx
import pytest
import trio
import trustme

from trioprobe.probing import BadHealthReply, NotOK, ProbeTimeout, UnexpectedStatus, open_prober
from trioprobe.probing import _transport as transport_module
from trioprobe.probing.health import format_rfc3339_nano

NOW_NS = 1_700_000_000 * 10**9
GOOD = json.dumps({"OK": True, "Now": format_rfc3339_nano(NOW_NS)}).encode()


class Peer:
    """A health endpoint that counts connections and requests; its reply is settable."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.status = 200
        self.body = GOOD
        self.close_after_reply = False
        self.silent = False
        self.connections = 0
        self.requests = 0
        self.agents: set[str] = set()

    async def serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, self._handle, listeners))
            scheme = "https" if self.tls else "http"
            task_status.started(f"{scheme}://127.0.0.1:{port}/raft/probing")

    async def _handle(self, raw: trio.SocketStream) -> None:
        self.connections += 1
        stream: trio.abc.Stream = raw
        if self.tls is not None:
            stream = trio.SSLStream(raw, self.tls, server_side=True)
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._one(stream, conn):
                conn.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: its own business
        finally:
            await trio.aclose_forcefully(stream)

    async def _one(self, stream: trio.abc.Stream, conn: h11.Connection) -> bool:
        """Serve one exchange; whether the connection may carry another."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                self.requests += 1
                self.agents.add(dict(event.headers).get(b"user-agent", b"").decode())
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return False
        if self.silent:
            await trio.sleep_forever()
        headers = [("content-length", str(len(self.body))), ("content-type", "application/json")]
        if self.close_after_reply:
            headers.append(("connection", "close"))
        data = conn.send(h11.Response(status_code=self.status, headers=headers))
        data += conn.send(h11.Data(data=self.body)) + conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def wait_for(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll the live status; ``limit`` only turns a hang into a failure."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


async def test_http_peer_uses_one_keep_alive_connection_for_many_probes() -> None:
    peer = Peer()
    async with trio.open_nursery() as servers:
        url = await servers.start(peer.serve)
        async with open_prober(wall_clock=lambda: NOW_NS / 1e9) as prober:
            status = prober.add_http("p", 0.01, [url], timeout=10.0)
            await wait_for(lambda: status.total >= 20)
        assert (status.loss, status.health) == (0, True)
        assert peer.connections == 1
        assert peer.requests >= 20
        assert peer.agents == {"trioprobe"}
        assert status.srtt > 0
        # The remote Now equals the local clock: clock_diff is minus half the SRTT exactly.
        assert status.clock_diff == pytest.approx(-status.srtt / 2)
        servers.cancel_scope.cancel()


async def test_a_peer_closing_each_connection_gets_a_new_one_per_probe() -> None:
    peer = Peer()
    peer.close_after_reply = True
    async with trio.open_nursery() as servers:
        url = await servers.start(peer.serve)
        async with open_prober() as prober:
            status = prober.add_http("p", 0.01, [url], timeout=10.0)
            await wait_for(lambda: status.total >= 5)
        assert status.loss == 0
        assert peer.connections == peer.requests >= 5
        servers.cancel_scope.cancel()


async def test_a_callers_client_keeps_http_peers_on_httpx() -> None:
    peer = Peer()
    async with trio.open_nursery() as servers:
        url = await servers.start(peer.serve)
        async with httpx.AsyncClient() as client, open_prober(client) as prober:
            status = prober.add_http("p", 0.01, [url], timeout=10.0)
            await wait_for(lambda: status.total >= 5)
        assert status.loss == 0
        assert len(peer.agents) == 1
        assert next(iter(peer.agents)).startswith("python-httpx/")
        servers.cancel_scope.cancel()


async def test_https_peer_goes_over_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    # The prober's own clients verify with the process-wide context; trust the test CA there.
    monkeypatch.setattr(transport_module, "ssl_context", lambda: client_context)
    peer = Peer(tls=server_context)
    async with trio.open_nursery() as servers:
        url = await servers.start(peer.serve)
        assert url.startswith("https://")
        async with open_prober() as prober:
            status = prober.add_http("p", 0.01, [url], timeout=10.0)
            await wait_for(lambda: status.total >= 3)
        assert status.loss == 0, status.error
        assert len(peer.agents) == 1
        assert next(iter(peer.agents)).startswith("python-httpx/")
        servers.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("status", "body", "error", "words"),
    [
        (200, b"not json", BadHealthReply, "reply is not JSON"),
        (200, b'{"OK": true, "Now": "yesterday"}', BadHealthReply, "not an RFC 3339 time"),
        (200, b'{"OK": true}', BadHealthReply, '"Now" is missing'),
        (200, b"[1, 2]", BadHealthReply, "not a JSON object"),
        (200, b'{"OK": false, "Now": "2024-01-01T00:00:00Z"}', NotOK, '"OK": false'),
        (503, GOOD, UnexpectedStatus, "status code 503"),
    ],
)
async def test_bad_replies_fail_clearly_on_the_lean_path(
    status: int, body: bytes, error: type[Exception], words: str
) -> None:
    peer = Peer()
    peer.status, peer.body = status, body
    async with trio.open_nursery() as servers:
        url = await servers.start(peer.serve)
        async with open_prober() as prober:
            probe = prober.add_http("p", 0.01, [url], timeout=10.0)
            await wait_for(lambda: probe.total >= 3)
        assert probe.loss == probe.total
        assert isinstance(probe.error, error)
        assert str(probe.error).startswith(f"{url}: ")
        assert words in str(probe.error)
        assert peer.agents == {"trioprobe"}
        # A bad reply is a complete exchange: the connection is still reused.
        assert peer.connections == 1
        servers.cancel_scope.cancel()


async def test_silent_peer_times_out_and_the_next_probe_reconnects() -> None:
    peer = Peer()
    peer.silent = True
    async with trio.open_nursery() as servers:
        url = await servers.start(peer.serve)
        async with open_prober() as prober:
            status = prober.add_http("p", 0.05, [url], timeout=0.05)
            await wait_for(lambda: status.total >= 2)
        assert status.loss == status.total
        assert isinstance(status.error, ProbeTimeout)
        # A cancelled exchange is never reused: one connection per probe.
        assert peer.connections >= 2
        servers.cancel_scope.cancel()


async def test_refused_connection_is_an_httpx_connect_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{port}/raft/probing"
        async with open_prober() as prober:
            status = prober.add_http("p", 0.01, [url], timeout=10.0)
            await wait_for(lambda: status.total >= 2)
    assert isinstance(status.error, httpx.ConnectError)
    assert status.loss == status.total
