"""The http options blackbox_exporter users rely on, against servers on loopback.

mTLS and ALPN against trustme certificates, a CONNECT-capable proxy written here, blackbox's
``fail_if_*`` validators on both transports, and the local end of the connection
(``source_address``, ``ip_protocol``). Every wait is bounded by the probe's timeout or a
generous hang guard; no verdict depends on timing.
"""

from __future__ import annotations

import ssl
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme

from trioprobe._asgi import serve_asgi
from trioprobe.config import ConfigError, parse_config
from trioprobe.probes._http_checks import HeaderMatch
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.results import ProbeResult

from ..probing.test_http_transport import _serve_h11
from .test_http_options import App

GUARD = 30


async def probe_once(url: str, **options: Any) -> ProbeResult:
    probe = HTTPProbe(Options(**options), lambda: [url], interval=0.05, timeout=10.0)
    send, receive = trio.open_memory_channel[ProbeResult](10)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            result = await receive.receive()
            nursery.cancel_scope.cancel()
    return result


@attrs.frozen
class PKI:
    ca_file: str
    client_cert: str
    client_key: str
    server: ssl.SSLContext
    ca: trustme.CA


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ca.issue_cert("prober@example.test")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    return PKI(str(paths["ca"]), str(paths["cert"]), str(paths["key"]), server, ca)


async def serve_tls(nursery: trio.Nursery, context: ssl.SSLContext) -> int:
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, _serve_h11, 0, context, host="127.0.0.1")
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1])


# -- TLS: ca_file, mutual TLS, HTTP/2 by ALPN -----------------------------------------------------


async def test_ca_file_and_a_client_certificate(nursery: trio.Nursery, pki: PKI) -> None:
    pki.server.verify_mode = ssl.CERT_REQUIRED
    pki.ca.configure_trust(pki.server)
    # TLS 1.2, so a missing client certificate fails the handshake itself; under TLS 1.3 the
    # server's refusal arrives after the client's half of it, as a disconnect.
    pki.server.maximum_version = ssl.TLSVersion.TLSv1_2
    port = await serve_tls(nursery, pki.server)
    url = f"https://127.0.0.1:{port}/health"

    ok = await probe_once(
        url, ca_file=pki.ca_file, client_cert=pki.client_cert, client_key=pki.client_key
    )
    assert ok.success, ok.error

    without = await probe_once(url, ca_file=pki.ca_file)
    assert not without.success
    assert without.error is not None
    # trio's server ends the handshake without an alert: the client sees it end mid-handshake.
    assert without.error.startswith("ConnectError: [SSL"), without.error

    untrusted = await probe_once(url, client_cert=pki.client_cert, client_key=pki.client_key)
    assert not untrusted.success
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.error or "")


@pytest.mark.parametrize(("http2", "offered"), [(True, "h2"), (False, "http/1.1")])
async def test_http2_is_offered_by_alpn(pki: PKI, http2: bool, offered: str) -> None:
    pki.server.set_alpn_protocols(["h2", "http/1.1"])
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    selected: list[str | None] = []

    async def handshake_only() -> None:
        stream = trio.SSLStream(await listener.accept(), pki.server, server_side=True)
        await stream.do_handshake()
        selected.append(stream.selected_alpn_protocol())
        await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake_only)
        await probe_once(f"https://127.0.0.1:{port}/", ca_file=pki.ca_file, http2=http2)
    await listener.aclose()
    assert selected == [offered]


# -- a proxy ---------------------------------------------------------------------------------------


@attrs.define
class Proxy:
    """A CONNECT-capable proxy: tunnels CONNECT, answers absolute-form requests itself."""

    seen: list[bytes] = attrs.field(factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            request_line = head.split(b"\r\n", 1)[0]
            self.seen.append(request_line)
            method, target, _ = request_line.split(b" ", 2)
            if method != b"CONNECT":
                body = b"answered by the proxy"
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                return
            host, _, port = target.decode().rpartition(":")
            upstream = await trio.open_tcp_stream(host, int(port))
            async with upstream:
                await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, stream, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pipe, upstream, stream, nursery.cancel_scope)


async def _pipe(source: trio.abc.Stream, sink: trio.abc.Stream, scope: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except trio.BrokenResourceError:
        pass
    scope.cancel()


async def test_requests_go_through_the_proxy(nursery: trio.Nursery, pki: PKI) -> None:
    proxy = Proxy()
    listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
    proxy_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    port = await serve_tls(nursery, pki.server)

    tunnelled = await probe_once(
        f"https://127.0.0.1:{port}/health", ca_file=pki.ca_file, proxy_url=proxy_url
    )
    assert tunnelled.success, tunnelled.error
    assert proxy.seen == [f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode()]

    # A plain http:// target is asked of the proxy in absolute form (never the lean path).
    forwarded = await probe_once("http://127.0.0.1:9/x", proxy_url=proxy_url, body_regex="proxy")
    assert forwarded.success, forwarded.error
    assert proxy.seen[-1] == b"GET http://127.0.0.1:9/x HTTP/1.1"


# -- blackbox's fail_if_* validators, on both transports -------------------------------------------


@pytest.fixture(params=["auto", "httpx"])
async def app_url(nursery: trio.Nursery, request: pytest.FixtureRequest) -> tuple[str, str]:
    url = await nursery.start(partial(serve_asgi, App()))
    return str(url) + "/json", str(request.param)


@pytest.mark.parametrize(
    "options",
    [
        {"fail_if_body_matches": ("nothing-like-this", "error")},
        {"fail_if_body_not_matches": ("checks", "items")},
        {"fail_if_header_matches": (HeaderMatch("x-request-id", "^xyz"),)},
        {"fail_if_header_not_matches": (HeaderMatch("x-request-id", "^abc-"),)},
        {"fail_if_header_matches": (HeaderMatch("x-missing", "x", allow_missing=True),)},
    ],
)
async def test_fail_if_validators_that_pass(
    app_url: tuple[str, str], options: dict[str, Any]
) -> None:
    url, transport = app_url
    result = await probe_once(url, transport=transport, **options)
    assert result.success, result.error


@pytest.mark.parametrize(
    ("options", "validator", "why"),
    [
        (
            {"fail_if_body_matches": ("nothing-like-this", '"status": "ok"')},
            "fail_if_body_matches",
            'body matched /"status": "ok"/',
        ),
        (
            {"fail_if_body_not_matches": ("checks", "nowhere")},
            "fail_if_body_not_matches",
            "body did not match /nowhere/",
        ),
        (
            {"fail_if_header_matches": (HeaderMatch("x-request-id", "^abc"),)},
            "fail_if_header_matches",
            'header x-request-id "abc-123" matched /^abc/',
        ),
        (
            {"fail_if_header_not_matches": (HeaderMatch("x-request-id", "^xyz"),)},
            "fail_if_header_not_matches",
            'header x-request-id "abc-123" did not match /^xyz/',
        ),
        (
            {"fail_if_header_matches": (HeaderMatch("x-missing", "x"),)},
            "fail_if_header_matches",
            "header x-missing missing",
        ),
    ],
)
async def test_fail_if_validators_that_fail(
    app_url: tuple[str, str], options: dict[str, Any], validator: str, why: str
) -> None:
    url, transport = app_url
    result = await probe_once(url, transport=transport, **options)
    assert not result.success
    assert result.error == why
    counts = result.extras["validation_failure"]
    assert counts.values == {validator: 1}  # type: ignore[union-attr]


# -- the local end: source_address and ip_protocol ------------------------------------------------


async def test_source_address_and_ip_protocol(nursery: trio.Nursery) -> None:
    peers: list[str] = []

    async def record_peer(stream: trio.SocketStream) -> None:
        peers.append(stream.socket.getpeername()[0])
        await _serve_h11(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, record_peer, 0, host="127.0.0.1"))
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"

    assert (await probe_once(url, source_address="127.0.0.2")).success
    assert peers == ["127.0.0.2"]
    assert (await probe_once(url, ip_protocol="ip4")).success
    assert peers[-1] == "127.0.0.1"
    v6 = await probe_once(url, ip_protocol="ip6")
    assert not v6.success  # an IPv4 literal has no IPv6 address to connect to
    assert len(peers) == 2


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("client_cert = 'c.pem'\n", "client_cert and client_key go together"),
        ("proxy_url = 'socks://x'\n", "proxy_url: no http:// or https:// scheme"),
        ("source_address = 'here'\n", "source_address: 'here' is not an IP address"),
        ("ip_protocol = 'ip5'\n", "ip_protocol"),
        (
            "ip_protocol = 'ip4'\nsource_address = '127.0.0.1'\n",
            "give either ip_protocol or source_address",
        ),
        ("fail_if_body_matches = ['(']\n", "fail_if_body_matches: bad regex '('"),
        (
            "fail_if_header_matches = [{ header = 'X Y', regexp = 'a' }]\n",
            "fail_if_header_matches: 'X Y' is not a valid header name",
        ),
    ],
)
def test_bad_options_are_named(extra: str, expected: str) -> None:
    import tomllib

    text = '[[probe]]\nname = "api"\ntype = "http"\ntargets = ["http://127.0.0.1:9/"]\n' + extra
    with pytest.raises(ConfigError) as raised:
        parse_config(tomllib.loads(text))
    assert expected in str(raised.value)
