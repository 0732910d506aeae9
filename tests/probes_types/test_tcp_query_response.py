"""tcp's ``query_response``: an SMTP-like dialogue with STARTTLS, against a server in the test.

The server speaks just enough SMTP on loopback (greeting, EHLO, STARTTLS, a TLS upgrade with a
trustme certificate, EHLO again, QUIT) for the probe to walk blackbox's usual SMTP module.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme

from trioprobe.config import ConfigError, load_config
from trioprobe.probes.tcp import Options, QueryStep, TCPProbe

SMTP_STEPS = (
    QueryStep(expect="^220 "),
    QueryStep(send="EHLO prober\r"),
    QueryStep(expect="^250-STARTTLS"),
    QueryStep(send="STARTTLS\r"),
    QueryStep(expect="^220 "),
    QueryStep(starttls=True),
    QueryStep(send="EHLO prober\r"),
    QueryStep(expect="^250 "),
    QueryStep(send="QUIT\r"),
)


class Lines:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(4096)
            if not chunk:
                return b""
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")


async def smtp_server(
    listener: trio.SocketListener, server_ssl: ssl.SSLContext, *, offer_starttls: bool
) -> list[bytes]:
    """Serve one session; return the commands the client sent."""
    commands: list[bytes] = []
    stream: trio.abc.Stream = await listener.accept()
    try:
        await stream.send_all(b"220 smtp.test ESMTP ready\r\n")
        lines = Lines(stream)
        commands.append(await lines.line())
        capabilities = b"250-smtp.test\r\n" + (b"250-STARTTLS\r\n" if offer_starttls else b"")
        await stream.send_all(capabilities + b"250 OK\r\n")
        command = await lines.line()
        commands.append(command)
        if command != b"STARTTLS":
            return commands
        await stream.send_all(b"220 Go ahead\r\n")
        stream = trio.SSLStream(stream, server_ssl, server_side=True)
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError:
            commands.append(b"<handshake failed>")
            return commands
        lines = Lines(stream)
        commands.append(await lines.line())
        await stream.send_all(b"250 OK\r\n")
        commands.append(await lines.line())
        await stream.send_all(b"221 Bye\r\n")
        return commands
    finally:
        await trio.aclose_forcefully(stream)


async def probe_against_server(
    options: Options,
    server_ssl: ssl.SSLContext,
    *,
    offer_starttls: bool = True,
    probe_timeout: float = 10.0,
) -> tuple[object, list[bytes]]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    probe = TCPProbe(options, lambda: (), interval=1.0, timeout=probe_timeout)
    probe._ssl = probe._ssl_context()
    seen: list[bytes] = []

    async def serve() -> None:
        seen.extend(await smtp_server(listener, server_ssl, offer_starttls=offer_starttls))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        result = await probe.probe_once(f"127.0.0.1:{port}")
    await listener.aclose()
    return result, seen


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("smtp.test").configure_cert(server_ssl)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_ssl, str(ca_file)


async def test_an_smtp_dialogue_with_starttls(certificates: tuple[ssl.SSLContext, str]) -> None:
    server_ssl, ca_file = certificates
    options = Options(query_response=SMTP_STEPS, ca_file=ca_file, server_name="smtp.test")
    result, seen = await probe_against_server(options, server_ssl)
    assert result.success, result.error  # type: ignore[attr-defined]
    assert seen == [b"EHLO prober", b"STARTTLS", b"EHLO prober", b"QUIT"]
    extras = result.extras  # type: ignore[attr-defined]
    assert {"connect_latency", "tls_handshake_duration", "exchange_latency"} <= set(extras)
    assert result.gauges["cert_expiry"] > 0  # type: ignore[attr-defined]


async def test_a_server_without_starttls_fails_at_that_expect(
    certificates: tuple[ssl.SSLContext, str],
) -> None:
    # The server lists its capabilities without STARTTLS, then waits for a command, as a real
    # one does: the probe waits for a line that never comes, and says which step it was in.
    server_ssl, ca_file = certificates
    options = Options(query_response=SMTP_STEPS, ca_file=ca_file, server_name="smtp.test")
    result, _ = await probe_against_server(
        options, server_ssl, offer_starttls=False, probe_timeout=0.5
    )
    assert not result.success  # type: ignore[attr-defined]
    assert result.error == "query_response[2] expect: timed out after 0.5s"  # type: ignore[attr-defined]


async def test_a_closed_connection_without_the_expected_line_says_what_came_last() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]

    async def serve() -> None:
        stream = await listener.accept()
        async with stream:
            await stream.send_all(b"554 no service here\r\n")

    probe = TCPProbe(
        Options(query_response=(QueryStep(expect="^220 "),)), lambda: (), interval=1.0, timeout=10
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        result = await probe.probe_once(f"127.0.0.1:{port}")
    await listener.aclose()
    assert not result.success
    assert result.error == (
        "query_response[0]: connection closed; no line matched /^220 / "
        "(last: '554 no service here')"
    )
    assert result.extras["errors"].values["mismatch"] == 1  # type: ignore[union-attr]


async def test_an_untrusted_certificate_fails_the_starttls_step(
    certificates: tuple[ssl.SSLContext, str],
) -> None:
    server_ssl, _ = certificates
    options = Options(query_response=SMTP_STEPS, server_name="smtp.test")  # system CAs only
    result, seen = await probe_against_server(options, server_ssl)
    assert not result.success  # type: ignore[attr-defined]
    assert result.error.startswith("query_response[5] starttls:"), result.error  # type: ignore[attr-defined]
    assert result.extras["errors"].values["tls"] == 1  # type: ignore[attr-defined]
    assert seen[-1] == b"<handshake failed>"


async def test_send_uses_the_groups_of_the_last_match() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    got: list[bytes] = []

    async def serve() -> None:
        stream = await listener.accept()
        async with stream:
            await stream.send_all(b"+OK nonce=4f2a ready\r\n")
            lines = Lines(stream)
            got.append(await lines.line())
            await stream.send_all(b"+OK\r\n")

    steps = (
        QueryStep(expect=r"nonce=(?P<nonce>\w+)"),
        QueryStep(send="AUTH ${nonce} $1 ${9}"),
        QueryStep(expect=r"^\+OK$"),
    )
    probe = TCPProbe(Options(query_response=steps), lambda: (), interval=1.0, timeout=10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        result = await probe.probe_once(f"127.0.0.1:{port}")
    await listener.aclose()
    assert result.success, result.error
    assert got == [b"AUTH 4f2a 4f2a "]


def test_query_response_in_a_config(tmp_path: Path) -> None:
    path = tmp_path / "smtp.toml"
    path.write_text(
        '[[probe]]\nname = "smtp"\ntype = "tcp"\ntargets = ["127.0.0.1:25"]\n'
        'query_response = [{ expect = "^220" }, { send = "EHLO prober\\r" }, '
        "{ starttls = true }]\n"
    )
    ((_, options),) = load_config(path).probes
    assert options.query_response[2] == QueryStep(starttls=True)

    path.write_text(
        '[[probe]]\nname = "smtp"\ntype = "tcp"\ntargets = ["127.0.0.1:25"]\n'
        'query = "x"\nquery_response = [{ expect = "^220" }, {}]\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "query_response" in str(raised.value)
