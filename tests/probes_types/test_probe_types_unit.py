"""The new probe types without external peers: config checks, parsing, and in-process peers."""

from __future__ import annotations

import contextlib
import errno
import functools
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.real.services import require_module
from trioprobe.cli import main
from trioprobe.config import ConfigError, load_config, parse_config
from trioprobe.metrics import Map
from trioprobe.probes import ping, probe_types, tcp, udp
from trioprobe.probes._net import TargetError, error_cause, split_host_port
from trioprobe.probes.external import ExternalProbe, parse_output
from trioprobe.probes.external import Options as ExternalOptions
from trioprobe.results import ProbeResult

GUARD = 30

# Minimal valid type-specific keys for each new type.
_REQUIRED: dict[str, dict[str, Any]] = {
    "tcp": {},
    "udp": {},
    "dns": {"query_name": "example.test"},
    "ping": {},
    "external": {"command": ["/bin/true"]},
}


def _config(type_name: str, **keys: Any) -> dict[str, Any]:
    return {
        "probe": [
            {
                "name": "p",
                "type": type_name,
                "targets": ["127.0.0.1:1"],
                **_REQUIRED[type_name],
                **keys,
            }
        ]
    }


@pytest.mark.parametrize("type_name", sorted(_REQUIRED))
def test_types_registered_and_valid_config_accepted(type_name: str) -> None:
    assert type_name in probe_types
    config = parse_config(_config(type_name))
    ((spec, options),) = config.probes
    assert isinstance(options, probe_types.load(type_name).Options)
    assert probe_types.load(type_name).make_probe(spec, options, list) is not None


@pytest.mark.parametrize("type_name", sorted(_REQUIRED))
def test_check_names_bad_key_of_each_type(type_name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(type_name, bogus_key=1))
    assert "probe[0].bogus_key: unknown key" in str(info.value)


@pytest.mark.parametrize(
    ("type_name", "keys", "message"),
    [
        ("tcp", {"expect": "("}, "probe[0]: expect is not a valid regular expression"),
        ("tcp", {"max_reply_bytes": 0}, "max_reply_bytes must be >= 1, got 0"),
        ("tcp", {"port": "80"}, "probe[0].port"),
        ("udp", {"payload_size": 4}, "payload_size must be between 20 and 65507, got 4"),
        ("dns", {"query_type": "BOGUS"}, "query_type: unknown DNS record type 'BOGUS'"),
        ("dns", {"valid_rcodes": ["FINE"]}, "valid_rcodes: unknown response code 'FINE'"),
        ("dns", {"protocol": "quic"}, "probe[0].protocol"),
        ("ping", {"socket_kind": "magic"}, "probe[0].socket_kind"),
        ("ping", {"packets": 0}, "packets must be >= 1, got 0"),
        ("external", {"command": []}, "command must be a non-empty array"),
        ("external", {"command": ["x", "{nope}"]}, "unknown field {nope}"),
        ("external", {"command": "/bin/true"}, "probe[0].command"),
    ],
)
def test_check_names_bad_value(type_name: str, keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(type_name, **keys))
    assert message in str(info.value)


def test_dns_query_name_is_required() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"probe": [{"name": "p", "type": "dns", "targets": ["127.0.0.1"]}]})
    assert "probe[0].query_name: required field missing" in str(info.value)


@pytest.mark.parametrize(
    ("target", "default", "expected"),
    [
        ("127.0.0.1:80", None, ("127.0.0.1", 80)),
        ("[::1]:53", None, ("::1", 53)),
        ("::1", 53, ("::1", 53)),
        ("example.test", 7, ("example.test", 7)),
    ],
)
def test_split_host_port(target: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_host_port(target, default) == expected


@pytest.mark.parametrize("target", ["host", "host:x", "host:70000", ":80"])
def test_split_host_port_rejects(target: str) -> None:
    with pytest.raises(TargetError):
        split_host_port(target)


def test_error_cause_looks_inside_trio_connect_error() -> None:
    inner = ExceptionGroup("attempts", [ConnectionRefusedError(errno.ECONNREFUSED, "refused")])
    outer = OSError("all attempts to connect to 127.0.0.1:1 failed")
    outer.__cause__ = inner
    assert error_cause(outer) == "refused"
    assert error_cause(socket.gaierror(-2, "Name or service not known")) == "dns"
    assert error_cause(OSError("other")) == "other"


def test_parse_output_format() -> None:
    out = parse_output(
        "# comment\n"
        "queue 3\n"
        "sent 10\n"
        "codes map:code 200:4 503:1\n"
        "free text that is not a metric\n"
        "broken map:code 200:x\n"
        "total 5\n"
        "nan_value nan\n",
        counters=frozenset({"sent"}),
    )
    assert out.gauges == {"queue": 3}
    assert type(out.gauges["queue"]) is int  # the live table shows floats as seconds
    assert out.counters == {"sent": 10.0, "codes": Map("code", {"200": 4.0, "503": 1.0})}
    assert type(out.counters["sent"]) is float  # summed over runs: one type whatever is printed
    assert out.bad_lines == 3  # the broken map, the reserved name, the NaN


def test_external_argv_templating_never_a_shell() -> None:
    probe = ExternalProbe(
        ExternalOptions(
            command=("check", "{target}", "--port={port}", "{labels[zone]}", "{probe}")
        ),
        list,
        interval=1.0,
        timeout=1.0,
        probe_name="db",
        labels={"zone": "eu"},
    )
    assert probe.argv("h.test:5432") == ["check", "h.test:5432", "--port=5432", "eu", "db"]
    # A target with shell syntax stays one argument.
    assert probe.argv("$(reboot);x") == ["check", "$(reboot);x", "--port=", "eu", "db"]


# -- udp: late and reordered replies from an in-process echo that delays the first one ---------


async def test_udp_late_reply_is_counted_not_taken_for_the_next() -> None:
    server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    first_held = trio.Event()
    release = trio.Event()

    async def echo(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        held = None
        while True:
            data, address = await server.recvfrom(2048)
            if held is None:
                held = (data, address)  # the first request: answered only after the second
                first_held.set()
                continue
            await server.sendto(data, address)
            await release.wait()
            await server.sendto(*held)

    # The timeout only has to outlast an answered loopback round trip, even on a loaded machine.
    probe = udp.UDPProbe(udp.Options(), lambda: [f"127.0.0.1:{port}"], interval=0.05, timeout=1.0)
    send, receive = trio.open_memory_channel[ProbeResult](10)
    with trio.fail_after(GUARD), server:
        async with trio.open_nursery() as nursery:
            await nursery.start(echo)
            await nursery.start(probe.run, send)
            first = await receive.receive()  # timed out: its echo is being held
            second = await receive.receive()  # answered
            release.set()
            third = await receive.receive()  # carries the late, overtaken echo of the first
            nursery.cancel_scope.cancel()
    assert first_held.is_set()
    assert first.timeout
    assert second.success
    assert second.extras == {"late": 0, "reordered": 0}
    results = [second, third]
    assert sum(int(r.extras["late"]) for r in results) == 1
    assert sum(int(r.extras["reordered"]) for r in results) == 1


# -- ping: the message when no ICMP socket is permitted ---------------------------------------


def test_ping_says_why_when_no_socket_is_permitted(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(trio.socket, "socket", refuse)
    probe = ping.PingProbe(ping.Options(), lambda: ["127.0.0.1"], interval=1.0, timeout=1.0)
    with pytest.raises(ping.PingSocketError) as info:
        probe._open_sockets()
    message = str(info.value)
    assert "cannot open an IPv4 ICMP socket" in message
    assert "unprivileged ICMP (SOCK_DGRAM) sockets are not allowed for group" in message
    assert "net.ipv4.ping_group_range is" in message
    assert "raw ICMP sockets need root or the CAP_NET_RAW capability" in message


def test_ping_packet_checksum_is_valid() -> None:
    icmp = ping._IcmpSocket(None, "raw", socket.AF_INET)  # type: ignore[arg-type]
    packet = icmp.packet(7, 56)
    assert len(packet) == 64
    assert ping._checksum(packet) == 0  # a packet with a correct checksum sums to zero


# -- tcp: TLS against an in-process server with a trustme certificate, and a silent peer --------


@pytest.fixture
def tls_server_context(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    trustme = require_module("trustme", "the TLS probe tests need a test CA")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, str(ca_file)


async def _serve(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_tcp_tls_handshake_and_certificate_expiry(
    tls_server_context: tuple[ssl.SSLContext, str],
) -> None:
    server_context, ca_file = tls_server_context

    async def greet(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError):
            await tls.send_all(b"220 ready\r\n")
            await tls.aclose()

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, greet)
            target = f"127.0.0.1:{port}"
            good = tcp.TCPProbe(
                tcp.Options(tls=True, ca_file=ca_file, expect="^220 "),
                list,
                interval=1.0,
                timeout=5.0,
            )
            untrusted = tcp.TCPProbe(tcp.Options(tls=True), list, interval=1.0, timeout=5.0)
            for probe in (good, untrusted):
                probe._ssl = await trio.to_thread.run_sync(probe._ssl_context)
            ok = await good.probe_once(target)
            bad = await untrusted.probe_once(target)
            nursery.cancel_scope.cancel()
    assert ok.success, ok.error
    assert ok.extras["tls_handshake_duration"].sum > 0  # type: ignore[union-attr]
    assert ok.extras["exchange_latency"].sum > 0  # type: ignore[union-attr]
    # The certificate's notAfter in seconds since the epoch (blackbox's
    # probe_ssl_earliest_cert_expiry); trustme's leaf certificates are valid until the year 3000.
    assert float(ok.gauges["cert_expiry"]) > time.time() + 900 * 365 * 86400
    assert not bad.success
    errors = bad.extras["errors"]
    assert isinstance(errors, Map)
    assert errors.values["tls"] == 1
    assert (bad.error or "").startswith("tls handshake: ")
    assert "CERTIFICATE_VERIFY_FAILED" in (bad.error or "")


async def test_tcp_silent_peer_times_out_with_its_step() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, silent)
            probe = tcp.TCPProbe(
                tcp.Options(query="hello\n", expect="hi"), list, interval=1.0, timeout=0.2
            )
            result = await probe.probe_once(f"127.0.0.1:{port}")
            nursery.cancel_scope.cancel()
    assert result.timeout
    assert result.error == "exchange: timed out after 0.2s"
    errors = result.extras["errors"]
    assert isinstance(errors, Map)
    assert errors.values["timeout"] == 1
    assert result.extras["connect_latency"].sum > 0  # type: ignore[union-attr]


def test_example_config_with_every_new_type_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "probe_types.toml"
    config = load_config(example)
    assert {spec.type for spec, _ in config.probes} == set(_REQUIRED)


def test_run_without_icmp_permission_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_socket = trio.socket.socket

    def no_icmp(family: int = -1, type: int = -1, proto: int = -1) -> trio.socket.SocketType:
        if proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_socket(family, type, proto)

    monkeypatch.setattr(trio.socket, "socket", no_icmp)
    config = tmp_path / "ping.toml"
    config.write_text('[[probe]]\nname = "lo"\ntype = "ping"\ntargets = ["127.0.0.1"]\n')
    assert main(["run", str(config), "--duration", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trioprobe: error: probe 'lo' could not start: cannot open an IPv4")
    assert "raw ICMP sockets need root or the CAP_NET_RAW capability" in err
    assert "Traceback" not in err
