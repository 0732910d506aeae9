"""Lazy Pirate client: timing over a fake transport under autojump; the real path in real time."""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import pytest
import trio
import trio.testing
import zmq

from trioprobe.zmqnet import (
    Client,
    MessageDroppedError,
    ProtocolError,
    RemoteError,
    Socket,
)


@attrs.define
class FakeServer:
    """Scripted behaviour per connection: a reply delay in seconds, or None to stay silent."""

    delays: list[float | None]
    reply: list[bytes] = attrs.field(factory=lambda: [b"", b"pong"])
    transports: list[FakeTransport] = attrs.field(factory=list)

    def factory(self, addr: str, identity: bytes) -> FakeTransport:
        index = len(self.transports)
        delay = self.delays[index] if index < len(self.delays) else self.delays[-1]
        transport = FakeTransport(self, addr, identity, delay)
        self.transports.append(transport)
        return transport


@attrs.define
class FakeTransport:
    server: FakeServer
    addr: str
    identity: bytes
    delay: float | None
    sent: list[list[bytes]] = attrs.field(factory=list)
    closed: bool = False
    closing: trio.Event = attrs.field(factory=trio.Event)

    async def request(self, frames: Sequence[bytes]) -> list[bytes]:
        assert not self.closed
        self.sent.append(list(frames))
        # As a real Socket: closing it wakes a pending request with ClosedResourceError.
        with trio.move_on_after(math.inf if self.delay is None else self.delay):
            await self.closing.wait()
            raise trio.ClosedResourceError("fake transport closed")
        return list(self.server.reply)

    def close(self) -> None:
        self.closed = True
        self.closing.set()


async def test_reply_within_timeout(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer([1.0])
    async with Client("tcp://x:1", timeout=5, retries=3, transport_factory=server.factory) as c:
        start = trio.current_time()
        assert await c.send("ping") == b"pong"
        assert trio.current_time() - start == pytest.approx(1.0)
        assert await c.send(b"again") == b"pong"
    assert len(server.transports) == 1  # the connection is reused while healthy
    assert server.transports[0].sent == [[b"", b"ping"], [b"", b"again"]]
    assert server.transports[0].closed


async def test_silent_server_drops_after_all_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer([None])
    client = Client(
        "tcp://x:1", identity="me", timeout=2.5, retries=3, transport_factory=server.factory
    )
    start = trio.current_time()
    with pytest.raises(MessageDroppedError, match=r"tcp://x:1.*3 attempt"):
        await client.send("ping")
    assert trio.current_time() - start == pytest.approx(7.5)
    assert len(server.transports) == 3
    assert all(t.closed for t in server.transports)
    identities = [t.identity for t in server.transports]
    assert len(set(identities)) == 3  # a fresh identity on every reconnect (with high odds)
    assert all(i.startswith(b"me-") and len(i) == len(b"me-") + 4 for i in identities)
    assert client.timeouts == 3
    assert client.identity is None
    await client.aclose()


async def test_retry_succeeds_on_a_later_attempt(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer([None, 0.5])
    async with Client("tcp://x:1", timeout=2, retries=3, transport_factory=server.factory) as c:
        start = trio.current_time()
        assert await c.send("ping") == b"pong"
        assert trio.current_time() - start == pytest.approx(2.5)
        assert c.connects == 2
        assert server.transports[0].closed
        assert not server.transports[1].closed
        assert server.transports[1].sent == [[b"", b"ping"]]


async def test_error_frame_raises_remote_error_without_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer([0.1], reply=[b"", b"ERROR", b"ValueError: nope"])
    async with Client("tcp://x:1", timeout=2, retries=3, transport_factory=server.factory) as c:
        with pytest.raises(RemoteError, match="ValueError: nope"):
            await c.send("ping")
        assert c.connects == 1
        assert not server.transports[0].closed


async def test_malformed_reply_raises_protocol_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer([0.1], reply=[b"", b"a", b"b", b"c"])
    async with Client("tcp://x:1", timeout=2, transport_factory=server.factory) as c:
        with pytest.raises(ProtocolError, match="3 frames"):
            await c.send("ping")


async def test_outer_cancel_resets_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    """A probe deadline shorter than the client timeout must not leave a late reply queued."""
    server = FakeServer([10.0, 0.1])
    async with Client("tcp://x:1", timeout=30, transport_factory=server.factory) as c:
        with trio.move_on_after(1):
            await c.send("slow")
        assert server.transports[0].closed
        assert await c.send("next") == b"pong"
        assert c.connects == 2


async def test_concurrent_sends_are_served_in_turn(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer([1.0])
    async with Client("tcp://x:1", timeout=5, transport_factory=server.factory) as c:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(c.send, str(i))
        # One request at a time on one connection: three replies take three delays.
        assert trio.current_time() - start == pytest.approx(3.0)
        assert len(server.transports[0].sent) == 3


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Client("tcp://x:1", timeout=0)
    with pytest.raises(ValueError, match="retries"):
        Client("tcp://x:1", retries=0)


async def test_closed_client_refuses_to_send() -> None:
    client = Client("tcp://127.0.0.1:1")
    await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await client.send("x")


async def test_send_queued_while_closing_opens_no_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A send waiting for the lock when close() runs must not connect afresh afterwards: nobody
    would ever close that connection."""
    server = FakeServer([None, 0.5])  # a later connection would answer
    client = Client("tcp://x:1", timeout=10, retries=3, transport_factory=server.factory)
    outcomes: list[object] = []

    async def send(message: str) -> None:
        try:
            outcomes.append(await client.send(message))
        except trio.ClosedResourceError as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, "first")  # holds the lock, waiting on the silent connection
        await trio.sleep(1)
        nursery.start_soon(send, "queued")  # waits for the lock
        await trio.sleep(1)
        client.close()
    assert len(outcomes) == 2
    assert all(isinstance(o, trio.ClosedResourceError) for o in outcomes)
    assert len(server.transports) == 1
    assert server.transports[0].closed


async def test_real_silent_server_reconnects_with_new_identities() -> None:
    """Over real sockets: a ROUTER that never answers sees each attempt under a new identity."""
    async with Socket(zmq.ROUTER) as silent:
        addr = silent.bind("tcp://127.0.0.1:0")
        async with Client(addr, identity="lp", timeout=0.2, retries=3) as client:
            with trio.fail_after(5), pytest.raises(MessageDroppedError):
                await client.send("hello")
        seen: list[bytes] = []
        with trio.fail_after(5):
            while len(seen) < 3:
                ident, empty, body = await silent.recv_multipart()
                assert (empty, body) == (b"", b"hello")
                seen.append(ident)
    assert len(set(seen)) == 3
    assert all(ident.startswith(b"lp-") for ident in seen)
