"""Issue 24 items 10 and 11c: a DNS server (or a spoofer) controls neither a probe's verdict nor
the exported series.

The servers are loopback sockets written here: each answers one question in a scripted way.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
import trio

from trioprobe.metrics import Map
from trioprobe.probes.dns import DNSProbe, Options, rcode_label
from trioprobe.results import ProbeResult

GUARD = 30
Reply = Callable[[dns.message.Message, tuple[str, int], trio.socket.SocketType], Awaitable[None]]


def _answer(query: dns.message.Message, *, tc: bool = False) -> dns.message.Message:
    response = dns.message.make_response(query)
    if tc:
        response.flags |= dns.flags.TC
    else:
        response.answer.append(
            dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "127.0.0.9")
        )
    return response


async def _udp_server(
    nursery: trio.Nursery, reply: Reply, *, sock: trio.socket.SocketType | None = None
) -> tuple[int, trio.socket.SocketType]:
    if sock is None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        with sock:
            while True:
                data, source = await sock.recvfrom(65535)
                await reply(dns.message.from_wire(data), source, sock)

    nursery.start_soon(serve)
    return sock.getsockname()[1], sock


async def _probe(port: int, **options: object) -> ProbeResult:
    probe = DNSProbe(Options(query_name="x.test", **options), list, interval=1.0, timeout=20.0)  # type: ignore[arg-type]
    with trio.fail_after(GUARD):
        return await probe.probe_once(f"127.0.0.1:{port}")


async def test_spoofed_replies_are_ignored_and_counted(nursery: trio.Nursery) -> None:
    spoofer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await spoofer.bind(("127.0.0.1", 0))

    async def reply(
        query: dns.message.Message, source: tuple[str, int], sock: trio.socket.SocketType
    ) -> None:
        wrong_id = _answer(query)
        wrong_id.id = (query.id + 1) % 65536
        await sock.sendto(wrong_id.to_wire(), source)  # right source, wrong id
        await spoofer.sendto(_answer(query).to_wire(), source)  # right id, wrong port
        await sock.sendto(b"\x00garbage", source)  # not DNS at all
        await sock.sendto(_answer(query).to_wire(), source)  # the real one, last

    port, _ = await _udp_server(nursery, reply)
    with spoofer:
        result = await _probe(port)
    assert result.success, result.error
    assert result.extras["ignored_replies"] == 3


@pytest.mark.parametrize(("rcode", "label"), [(12, "other"), (23, "other"), (3, "NXDOMAIN")])
async def test_unknown_and_extended_rcodes_share_one_label(
    nursery: trio.Nursery, rcode: int, label: str
) -> None:
    async def reply(
        query: dns.message.Message, source: tuple[str, int], sock: trio.socket.SocketType
    ) -> None:
        response = dns.message.make_response(query)
        if rcode > 15:
            response.use_edns(0)
        response.set_rcode(dns.rcode.Rcode.make(rcode))
        await sock.sendto(response.to_wire(), source)

    port, _ = await _udp_server(nursery, reply)
    result = await _probe(port)
    assert not result.success
    assert result.error == f"response code {label if label != 'other' else rcode}"
    codes = result.extras["rcode"]
    assert isinstance(codes, Map)
    assert codes.values == {label: 1}


def test_rcode_labels_are_a_fixed_set() -> None:
    assert {rcode_label(code) for code in range(4096)} == {
        "NOERROR",
        "FORMERR",
        "SERVFAIL",
        "NXDOMAIN",
        "NOTIMP",
        "REFUSED",
        "YXDOMAIN",
        "YXRRSET",
        "NXRRSET",
        "NOTAUTH",
        "NOTZONE",
        "BADVERS",
        "other",
    }


async def _tcp_answers(listener: trio.SocketListener, nursery: trio.Nursery) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = await stream.receive_some(65535)
            if not chunk:
                return
            data += chunk
        wire = _answer(dns.message.from_wire(data[2:])).to_wire()
        await stream.send_all(struct.pack("!H", len(wire)) + wire)
        await stream.aclose()

    await nursery.start(trio.serve_listeners, handle, [listener])


async def _udp_and_tcp_on_one_port() -> tuple[trio.socket.SocketType, trio.SocketListener]:
    """A UDP socket and a TCP listener bound to the same loopback port, before anything serves.

    The UDP port is free for TCP unless another socket (another test's connection, say) holds
    it, so a few ports are tried; nothing is served until both are bound, so a port given up
    closes no socket that a task is waiting on.
    """
    for _ in range(20):
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        tcp = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen()
        return udp, trio.SocketListener(tcp)
    pytest.fail("no port free for both UDP and TCP in 20 tries")


async def _truncating(
    query: dns.message.Message, source: tuple[str, int], sock: trio.socket.SocketType
) -> None:
    await sock.sendto(_answer(query, tc=True).to_wire(), source)


async def test_a_truncated_reply_says_so(nursery: trio.Nursery) -> None:
    port, _ = await _udp_server(nursery, _truncating)
    result = await _probe(port)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith("truncated reply (TC; set retry_tcp = true to retry over TCP)")
    assert "0 A answer(s)" in result.error


async def test_retry_tcp_asks_again_over_tcp(nursery: trio.Nursery) -> None:
    udp, listener = await _udp_and_tcp_on_one_port()
    port, _ = await _udp_server(nursery, _truncating, sock=udp)
    await _tcp_answers(listener, nursery)
    result = await _probe(port, retry_tcp=True)
    assert result.success, result.error
