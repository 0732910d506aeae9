"""Each failure reason, produced by a real failure on loopback (issue 21 item 1).

Real sockets, real TLS (trustme certificates), real servers that misbehave on purpose, and a
real failing program: no exception is faked. Deadlines run under ``autojump_clock`` where the
test is about time (a blackholed connect); elsewhere the outcome is a refusal, an alert or a
reply, so it does not depend on how busy the machine is (``fail_after`` is only a hang guard).
The dnsmasq NXDOMAIN and the ping without echo replies are in tests/real/test_probe_types.py.
"""

from __future__ import annotations

import datetime
import os
import resource
import socket
import ssl
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from trioprobe.failures import Failure, FailureReason, Phase
from trioprobe.probes import external, tcp, udp
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.results import ProbeResult

GUARD = 30

# Both HTTP transports: the lean h11 path (plain http, the default) and httpx.
TRANSPORTS = ["auto", "httpx"]


async def _first(probe: Any, *, guard: bool = True) -> ProbeResult:
    """The first result of ``probe`` run on its schedule (so the scheduler's deadline and phase
    tracking are what a user gets)."""
    send, receive = trio.open_memory_channel[ProbeResult](10)
    with trio.fail_after(GUARD) if guard else _nothing():
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            result = await receive.receive()
            nursery.cancel_scope.cancel()
    return result


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _http(url: str, timeout: float = 10.0, **options: Any) -> HTTPProbe:
    return HTTPProbe(Options(**options), lambda: [url], interval=0.05, timeout=timeout)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: the kernel refuses it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _blackholed_port() -> Iterator[int]:
    """A listener that never accepts, its backlog (0: one connection) taken by a filler: further
    SYNs are dropped, so a connect waits until its deadline."""
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = int(server.getsockname()[1])
        filler.settimeout(GUARD)
        filler.connect(("127.0.0.1", port))
        yield port


async def _serve_raw(reply: bytes, nursery: trio.Nursery) -> int:
    """A TCP server that reads a request head and answers ``reply`` as given, then closes."""

    async def handle(stream: trio.SocketStream) -> None:
        received = b""
        with trio.move_on_after(GUARD):
            while b"\r\n\r\n" not in received:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                received += chunk
            await stream.send_all(reply)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


def _response(status: str, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        f"HTTP/1.1 {status}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode() + body
    )


# -- connect ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_refused_port_is_connect_refused(transport: str) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/"
    result = await _first(_http(url, transport=transport))
    assert result.failure == Failure(FailureReason.CONNECT_REFUSED, Phase.CONNECT), result.error


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_blackholed_connect_is_connect_timeout(
    transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    with _blackholed_port() as port:
        result = await _first(_http(f"http://127.0.0.1:{port}/", timeout=2.0, transport=transport))
    assert result.timeout
    assert result.failure == Failure(FailureReason.CONNECT_TIMEOUT, Phase.CONNECT), result.error


async def test_tcp_refused_and_blackholed(autojump_clock: trio.testing.MockClock) -> None:
    refused = await _first(_tcp(f"127.0.0.1:{_closed_port()}"))
    assert refused.failure == Failure(FailureReason.CONNECT_REFUSED), refused.error
    with _blackholed_port() as port:
        blackholed = await _first(_tcp(f"127.0.0.1:{port}", timeout=2.0))
    assert blackholed.failure == Failure(FailureReason.CONNECT_TIMEOUT), blackholed.error
    assert blackholed.timeout


def _tcp(target: str, timeout: float = 10.0, **options: Any) -> tcp.TCPProbe:
    return tcp.TCPProbe(tcp.Options(**options), lambda: [target], interval=0.05, timeout=timeout)


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_server_context(ca: trustme.CA, *, expired: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if expired:
        now = datetime.datetime.now(datetime.UTC)
        cert = ca.issue_cert(
            "127.0.0.1",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
    else:
        cert = ca.issue_cert("127.0.0.1")
    cert.configure_cert(context)
    return context


async def _serve_tls(context: ssl.SSLContext, nursery: trio.Nursery) -> int:
    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        # The handshake fails on the client's side; ours just ends.
        with trio.move_on_after(GUARD):
            try:
                await stream.do_handshake()
                await stream.send_all(_response("200 OK", b"ok"))
            except trio.BrokenResourceError:
                pass
        await trio.aclose_forcefully(stream)

    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, handle, 0, context, host="127.0.0.1")
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1])


def _ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_https_expired_certificate_is_tls_expired(
    ca: trustme.CA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    port = await _serve_tls(_tls_server_context(ca, expired=True), nursery)
    probe = _http(f"https://127.0.0.1:{port}/", ca_file=_ca_file(ca, tmp_path))
    result = await _first(probe)
    assert result.failure == Failure(FailureReason.TLS_EXPIRED, Phase.TLS), result.error


async def test_https_untrusted_certificate_is_tls_verify(
    ca: trustme.CA, nursery: trio.Nursery
) -> None:
    # The system's CAs do not know this test CA.
    port = await _serve_tls(_tls_server_context(ca), nursery)
    result = await _first(_http(f"https://127.0.0.1:{port}/"))
    assert result.failure == Failure(FailureReason.TLS_VERIFY, Phase.TLS), result.error
    assert "CERTIFICATE_VERIFY_FAILED" in (result.error or "")


async def test_tcp_tls_expired_and_untrusted(
    ca: trustme.CA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    expired_port = await _serve_tls(_tls_server_context(ca, expired=True), nursery)
    trusted = {"tls": True, "ca_file": _ca_file(ca, tmp_path)}
    expired = await _first(_tcp(f"127.0.0.1:{expired_port}", **trusted))
    assert expired.failure == Failure(FailureReason.TLS_EXPIRED), expired.error
    untrusted_port = await _serve_tls(_tls_server_context(ca), nursery)
    untrusted = await _first(_tcp(f"127.0.0.1:{untrusted_port}", tls=True))
    assert untrusted.failure == Failure(FailureReason.TLS_VERIFY), untrusted.error


async def test_https_to_a_plain_server_is_tls_handshake(nursery: trio.Nursery) -> None:
    # The server answers the ClientHello in plain HTTP: not a TLS record (WRONG_VERSION_NUMBER).
    port = await _serve_plain_to_tls(nursery)
    result = await _first(_http(f"https://127.0.0.1:{port}/"))
    assert result.failure == Failure(FailureReason.TLS_HANDSHAKE, Phase.TLS), result.error
    plain = await _first(_tcp(f"127.0.0.1:{port}", tls=True))
    assert plain.failure == Failure(FailureReason.TLS_HANDSHAKE), plain.error


async def _serve_plain_to_tls(nursery: trio.Nursery) -> int:
    async def handle(stream: trio.SocketStream) -> None:
        with trio.move_on_after(GUARD):
            await stream.receive_some(65536)
            await stream.send_all(_response("400 Bad Request", b"plain http here\n" * 8))
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


# -- the reply --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_wrong_status_is_http_status(transport: str, nursery: trio.Nursery) -> None:
    port = await _serve_raw(_response("503 Service Unavailable", b"down"), nursery)
    result = await _first(_http(f"http://127.0.0.1:{port}/", transport=transport))
    assert result.failure == Failure(FailureReason.HTTP_STATUS, Phase.VALIDATE), result.error
    assert result.error == "unexpected status 503 Service Unavailable"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_failed_validator_is_validation_with_its_name(
    transport: str, nursery: trio.Nursery
) -> None:
    port = await _serve_raw(_response("200 OK", b"status: degraded"), nursery)
    probe = _http(f"http://127.0.0.1:{port}/", transport=transport, body_regex="status: ok")
    result = await _first(probe)
    assert result.failure == Failure(FailureReason.VALIDATION, validator="regex"), result.error
    assert result.failure is not None
    assert result.failure.label == "validation (regex)"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_malformed_reply_is_protocol(transport: str, nursery: trio.Nursery) -> None:
    port = await _serve_raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", nursery)
    result = await _first(_http(f"http://127.0.0.1:{port}/", transport=transport))
    assert result.reason is FailureReason.PROTOCOL, (result.failure, result.error)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_reply_closed_without_an_answer_is_no_reply(
    transport: str, nursery: trio.Nursery
) -> None:
    port = await _serve_raw(b"", nursery)
    result = await _first(_http(f"http://127.0.0.1:{port}/", transport=transport))
    assert result.failure == Failure(FailureReason.NO_REPLY, Phase.WAIT), result.error


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_body_over_the_limit_is_body_too_large(
    transport: str, nursery: trio.Nursery
) -> None:
    port = await _serve_raw(_response("200 OK", b"x" * 4096), nursery)
    probe = _http(f"http://127.0.0.1:{port}/", transport=transport, max_body_bytes=1024)
    result = await _first(probe)
    assert result.failure == Failure(FailureReason.BODY_TOO_LARGE, Phase.RECEIVE), result.error


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_server_that_never_answers_times_out_in_wait(
    transport: str, nursery: trio.Nursery
) -> None:
    # Real time (autojump could end the deadline while the loopback connect is completing):
    # connect and send take microseconds; the 3 s are spent waiting for the reply.
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    result = await _first(_http(f"http://127.0.0.1:{port}/", timeout=3.0, transport=transport))
    assert result.failure == Failure(FailureReason.TIMEOUT, Phase.WAIT), result.error
    assert result.failure.label == "timeout (wait)"


async def test_tcp_reply_mismatch_and_close(nursery: trio.Nursery) -> None:
    port = await _serve_raw(b"220 not what you wanted\r\n", nursery)
    mismatch = await _first(_tcp(f"127.0.0.1:{port}", query="HELO\r\n\r\n", expect="^250"))
    assert mismatch.failure == Failure(FailureReason.VALIDATION, validator="expect")
    closed_port = await _serve_raw(b"", nursery)
    closed = await _first(_tcp(f"127.0.0.1:{closed_port}", query="HELO\r\n\r\n", expect="^250"))
    assert closed.failure == Failure(FailureReason.NO_REPLY), closed.error


# -- udp --------------------------------------------------------------------------------------


async def test_udp_closed_port_is_unreachable() -> None:
    # Real time: the ICMP port unreachable comes back at once, and autojump could end the
    # probe's deadline before the kernel delivered it.
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # the kernel answers datagrams to it with ICMP port unreachable
    result = await _first(_udp(f"127.0.0.1:{port}", timeout=10.0))
    assert result.failure == Failure(FailureReason.UNREACHABLE), result.error
    assert not result.timeout


async def test_udp_silent_peer_is_no_reply(autojump_clock: trio.testing.MockClock) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        result = await _first(_udp(f"127.0.0.1:{silent.getsockname()[1]}"), guard=False)
    assert result.failure == Failure(FailureReason.NO_REPLY, Phase.WAIT), result.error
    assert result.timeout


def _udp(target: str, timeout: float = 2.0) -> udp.UDPProbe:
    return udp.UDPProbe(udp.Options(), lambda: [target], interval=0.05, timeout=timeout)


# -- external ---------------------------------------------------------------------------------


def _program(tmp_path: Path, body: str) -> str:
    path = tmp_path / "check.sh"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def _external(command: list[str], timeout: float = 10.0) -> external.ExternalProbe:
    return external.ExternalProbe(
        external.Options(command=tuple(command)),
        lambda: ["db"],
        interval=0.05,
        timeout=timeout,
        probe_name="ext",
        labels={},
    )


async def test_external_failing_program_is_program_failed(tmp_path: Path) -> None:
    script = _program(tmp_path, "echo 'replica lag too high' >&2\nexit 3\n")
    result = await _first(_external([script]))
    assert result.failure == Failure(FailureReason.PROGRAM_FAILED, Phase.RUN)
    assert result.error == "exit status 3: replica lag too high"
    missing = await _first(_external([str(tmp_path / "no-such-program")]))
    assert missing.failure == Failure(FailureReason.PROGRAM_FAILED, Phase.RUN), missing.error


async def test_external_program_that_hangs_times_out_in_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    script = _program(tmp_path, "exec sleep 600\n")
    result = await _first(_external([script], timeout=1.0), guard=False)
    assert result.failure == Failure(FailureReason.TIMEOUT, Phase.RUN), result.error


# -- the prober itself --------------------------------------------------------------------------


@contextmanager
def _no_free_descriptors() -> Iterator[None]:
    """RLIMIT_NOFILE lowered to the lowest free descriptor: the next socket() is EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # A new descriptor takes the lowest free number: with the limit there, none is left.
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_no_file_descriptor_left_is_resource() -> None:
    # probe_once directly: nothing else in this task needs a descriptor meanwhile.
    probe = _tcp(f"127.0.0.1:{_closed_port()}")
    with trio.fail_after(GUARD), _no_free_descriptors():
        result = await probe.probe_once(probe.targets()[0])
    assert result.failure == Failure(FailureReason.RESOURCE), result.error
    assert "Too many open files" in (result.error or "")
