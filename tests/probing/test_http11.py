"""The one HTTP/1.1-on-Trio layer (trioprobe._http11): events in and out over a socket pair, and
every failure as one of its typed errors (which are httpx's classes of the same names)."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator

import h11
import httpx
import pytest
import trio

from trioprobe._http11 import (
    HTTP11Connection,
    LocalProtocolError,
    ReadError,
    RemoteProtocolError,
    WriteError,
)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    a, b = trio.socket.socketpair()
    ends = trio.SocketStream(a), trio.SocketStream(b)
    try:
        yield ends
    finally:
        for end in ends:
            end.socket.close()


async def test_a_request_and_its_response_cross_and_the_connection_is_reusable(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    client_end, server_end = pair
    client = HTTP11Connection(client_end, h11.CLIENT)
    server = HTTP11Connection(server_end, h11.SERVER)
    with trio.fail_after(5):
        await client.send(
            h11.Request(method="GET", target="/x", headers=[("Host", "a")]), h11.EndOfMessage()
        )
        request = await server.next_event()
        assert isinstance(request, h11.Request)
        assert request.target == b"/x"
        assert isinstance(await server.next_event(), h11.EndOfMessage)
        await server.send(
            h11.Response(status_code=200, headers=[("Content-Length", "2")]),
            h11.Data(data=b"ok"),
            h11.EndOfMessage(),
        )
        response = await client.next_event()
        assert isinstance(response, h11.Response)
        assert response.status_code == 200
        data = await client.next_event()
        assert isinstance(data, h11.Data)
        assert data.data == b"ok"
        assert isinstance(await client.next_event(), h11.EndOfMessage)
    assert client.reusable
    assert server.both_done
    client.start_next_cycle()
    server.start_next_cycle()
    assert not server.buffered
    assert not server.peer_closed


async def test_garbage_is_a_remote_protocol_error_with_the_status_to_answer(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    client_end, server_end = pair
    server = HTTP11Connection(server_end, h11.SERVER)
    await client_end.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    with trio.fail_after(5), pytest.raises(RemoteProtocolError) as info:
        await server.next_event()
    assert info.value.status_hint == 400
    assert isinstance(info.value, httpx.RemoteProtocolError)
    assert info.value.describe().startswith("RemoteProtocolError: ")


async def test_a_head_over_the_limit_is_answered_431(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    client_end, server_end = pair
    server = HTTP11Connection(server_end, h11.SERVER, max_head_bytes=1024)
    await client_end.send_all(b"GET / HTTP/1.1\r\nX: " + b"a" * 4096)
    with trio.fail_after(5), pytest.raises(RemoteProtocolError) as info:
        await server.next_event()
    assert info.value.status_hint == 431


async def test_sending_out_of_turn_is_a_local_protocol_error(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    client_end, _server_end = pair
    client = HTTP11Connection(client_end, h11.CLIENT)
    with pytest.raises(LocalProtocolError) as info:
        await client.send(h11.Response(status_code=200, headers=[]))
    assert isinstance(info.value, httpx.LocalProtocolError)


async def test_a_reset_is_a_read_error_in_the_os_words(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    client_end, server_end = pair
    client = HTTP11Connection(client_end, h11.CLIENT)
    await client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    # Unread bytes plus SO_LINGER 0: close() resets the connection.
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server_end.socket.close()
    with trio.fail_after(5), pytest.raises((ReadError, RemoteProtocolError)) as info:
        await client.next_event()
    # A socketpair may report the close as an end of stream rather than a reset: both are
    # typed, and a reset names the OS error.
    if isinstance(info.value, ReadError):
        assert isinstance(info.value, httpx.ReadError)
        assert "Errno" in str(info.value)


async def _flood(client: HTTP11Connection) -> None:
    head = [("Host", "a"), ("Transfer-Encoding", "chunked")]
    await client.send(h11.Request(method="POST", target="/", headers=head))
    for _ in range(100):  # the first writes may land in the socket's buffer
        await client.send(h11.Data(data=b"x" * 65536))


async def test_writing_to_a_closed_peer_is_a_write_error(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    client_end, server_end = pair
    client = HTTP11Connection(client_end, h11.CLIENT)
    server_end.socket.close()
    with trio.fail_after(5), pytest.raises(WriteError) as info:
        await _flood(client)
    assert isinstance(info.value, httpx.WriteError)
    assert info.value.describe().startswith("WriteError: [Errno")


async def test_the_end_of_stream_between_messages_is_connection_closed(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    client_end, server_end = pair
    server = HTTP11Connection(server_end, h11.SERVER)
    await client_end.aclose()
    with trio.fail_after(5):
        assert isinstance(await server.next_event(), h11.ConnectionClosed)
    assert server.peer_closed
