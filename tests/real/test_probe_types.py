"""The tcp, udp, dns, ping and external probe types against real peers on loopback.

socat echo services, a dnsmasq with records set on its command line, the kernel's own ICMP echo,
and small scripts. Each type has a success and a failure case.
"""

from __future__ import annotations

import contextlib
import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from trioprobe.failures import Failure, FailureReason, Phase
from trioprobe.metrics import Map
from trioprobe.probes import dns as dns_probe
from trioprobe.probes import external, ping, tcp, udp
from trioprobe.results import ProbeResult

from .net_services import DNS_A, DNS_MX, DNS_TXT, dnsmasq, socat_tcp_echo, socat_udp_echo
from .services import free_port, skip_or_fail

pytestmark = pytest.mark.real

# Hang guard only: every wait below ends on progress (a reply, a refusal, a deadline).
GUARD = 30


def _causes(result: ProbeResult) -> dict[str, int | float]:
    errors = result.extras["errors"]
    assert isinstance(errors, Map)
    return {k: v for k, v in errors.values.items() if v}


# -- tcp -------------------------------------------------------------------------------------


async def test_tcp_query_expect_against_socat(tmp_path: Path) -> None:
    with socat_tcp_echo(tmp_path) as port:
        probe = tcp.TCPProbe(
            tcp.Options(query="PING probe\n", expect=r"PING \w+"),
            list,
            interval=1.0,
            timeout=5.0,
        )
        with trio.fail_after(GUARD):
            result = await probe.probe_once(f"127.0.0.1:{port}")
    assert result.success, result.error
    assert _causes(result) == {}
    assert result.extras["connect_latency"].sum > 0  # type: ignore[union-attr]
    assert result.extras["exchange_latency"].sum > 0  # type: ignore[union-attr]


async def test_tcp_mismatch_and_closed_port(tmp_path: Path) -> None:
    with socat_tcp_echo(tmp_path) as port:
        probe = tcp.TCPProbe(
            tcp.Options(query="hello world\n", expect="bye", max_reply_bytes=5),
            list,
            interval=1.0,
            timeout=5.0,
        )
        with trio.fail_after(GUARD):
            mismatch = await probe.probe_once(f"127.0.0.1:{port}")
    assert not mismatch.success
    assert _causes(mismatch) == {"mismatch": 1}
    assert mismatch.failure == Failure(FailureReason.VALIDATION, validator="expect")
    assert "did not match /bye/" in (mismatch.error or "")

    closed = free_port()  # nothing listens there any more
    with trio.fail_after(GUARD):
        refused = await probe.probe_once(f"127.0.0.1:{closed}")
    assert not refused.success
    assert _causes(refused) == {"refused": 1}
    assert refused.failure == Failure(FailureReason.CONNECT_REFUSED, Phase.CONNECT)
    assert "ConnectionRefusedError" in (refused.error or "")


# -- udp -------------------------------------------------------------------------------------


async def _run_udp(target: str, count: int, probe_timeout: float) -> list[ProbeResult]:
    probe = udp.UDPProbe(
        udp.Options(payload_size=64), lambda: [target], interval=0.05, timeout=probe_timeout
    )
    send, receive = trio.open_memory_channel[ProbeResult](100)
    got: list[ProbeResult] = []
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            async for result in receive:
                got.append(result)
                if len(got) == count:
                    break
            nursery.cancel_scope.cancel()
    return got


async def test_udp_echo_against_socat(tmp_path: Path) -> None:
    with socat_udp_echo(tmp_path) as port:
        results = await _run_udp(f"127.0.0.1:{port}", 5, probe_timeout=5.0)
    assert all(r.success for r in results), [r.error for r in results]
    assert sum(int(r.extras["late"]) for r in results) == 0


async def test_udp_peer_that_does_not_answer() -> None:
    # A bound socket that never reads: datagrams are accepted and never echoed.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        results = await _run_udp(f"127.0.0.1:{port}", 2, probe_timeout=0.2)
    assert [r.timeout for r in results] == [True, True]
    assert not any(r.success for r in results)
    assert {r.failure for r in results} == {Failure(FailureReason.NO_REPLY, Phase.WAIT)}


# -- dns -------------------------------------------------------------------------------------


def _dns(**options: object) -> dns_probe.DNSProbe:
    return dns_probe.DNSProbe(
        dns_probe.Options(**options),  # type: ignore[arg-type]
        list,
        interval=1.0,
        timeout=5.0,
    )


@pytest.fixture
def dns_port(tmp_path: Path) -> Iterator[int]:
    with dnsmasq(tmp_path) as port:
        yield port


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
async def test_dns_records_against_dnsmasq(dns_port: int, protocol: str) -> None:
    target = f"127.0.0.1:{dns_port}"
    checks = [
        _dns(query_name=DNS_A[0], protocol=protocol, answer_regex=rf"^{DNS_A[1]}$"),
        _dns(query_name=DNS_TXT[0], query_type="TXT", protocol=protocol, answer_regex="hello"),
        _dns(query_name=DNS_MX[0], query_type="MX", protocol=protocol, answer_regex=DNS_MX[1]),
    ]
    with trio.fail_after(GUARD):
        for probe in checks:
            result = await probe.probe_once(target)
            assert result.success, (probe.options, result.error)
            assert result.extras["rcode"] == Map("rcode", {"NOERROR": 1})


async def test_dns_nxdomain_and_wrong_answer(dns_port: int) -> None:
    target = f"127.0.0.1:{dns_port}"
    with trio.fail_after(GUARD):
        nx = await _dns(query_name="missing.x.test").probe_once(target)
        wrong = await _dns(query_name=DNS_A[0], answer_regex=r"^10\.").probe_once(target)
        too_few = await _dns(query_name=DNS_A[0], min_answers=2).probe_once(target)
        nx_ok = await _dns(
            query_name="missing.x.test", valid_rcodes=("NXDOMAIN",), min_answers=0
        ).probe_once(target)
    assert not nx.success
    # dnsmasq's NXDOMAIN: the name did not resolve.
    assert nx.failure == Failure(FailureReason.DNS, Phase.DNS)
    assert nx.error == "response code NXDOMAIN"
    assert nx.extras["rcode"] == Map("rcode", {"NXDOMAIN": 1})
    assert not wrong.success
    assert wrong.failure == Failure(FailureReason.VALIDATION, validator="answer_regex")
    assert "no answer matched" in (wrong.error or "")
    assert DNS_A[1] in (wrong.error or "")
    assert not too_few.success
    assert too_few.failure == Failure(FailureReason.DNS)
    assert "expected at least 2" in (too_few.error or "")
    assert nx_ok.success, nx_ok.error


async def test_dns_server_that_does_not_answer() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        probe = dns_probe.DNSProbe(
            dns_probe.Options(query_name="www.x.test"),
            lambda: [f"127.0.0.1:{port}"],
            interval=0.05,
            timeout=0.2,
        )
        send, receive = trio.open_memory_channel[ProbeResult](10)
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                await nursery.start(probe.run, send)
                result = await receive.receive()
                nursery.cancel_scope.cancel()
    assert result.timeout
    assert not result.success
    assert result.failure == Failure(FailureReason.TIMEOUT, Phase.WAIT)


# -- ping ------------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _sysctl(name: str, value: str) -> Iterator[None]:
    """Set a sysctl for the duration (root only; skip or fail when that is impossible)."""
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        old = path.read_text()
        path.write_text(value)
    except OSError as exc:
        reason = f"cannot set {name} ({exc.strerror}): needs root in this network namespace"
        skip_or_fail(reason)
    try:
        yield
    finally:
        path.write_text(old)


def _ping_probe(kind: str, targets: list[str], **options: object) -> ping.PingProbe:
    opts = ping.Options(socket_kind=kind, spacing=0.01, **options)  # type: ignore[arg-type]
    return ping.PingProbe(opts, lambda: targets, interval=0.1, timeout=2.0)


async def _ping_round(probe: ping.PingProbe, count: int) -> list[ProbeResult]:
    """The first ``count`` results, or (``count=0``) the first result of every target."""
    send, receive = trio.open_memory_channel[ProbeResult](10000)
    got: list[ProbeResult] = []
    wanted = set(probe.targets())
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(probe.run, send)
            async for result in receive:
                if count or result.target in wanted:
                    got.append(result)
                    wanted.discard(result.target)
                if len(got) == count or (not count and not wanted):
                    break
            nursery.cancel_scope.cancel()
    return got


@contextlib.contextmanager
def _ping_socket_allowed(kind: str) -> Iterator[None]:
    if kind == "dgram":
        # Allow every group to open ping sockets for the test, then put the range back.
        with _sysctl("net.ipv4.ping_group_range", "0 2147483647"):
            yield
    else:
        if os.geteuid() != 0:
            reason = "raw ICMP sockets need root"
            skip_or_fail(reason)
        yield


@pytest.mark.parametrize("kind", ["raw", "dgram"])
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_ping_loopback(kind: str, address: str) -> None:
    if address == "::1" and not _ipv6_loopback():
        skip_or_fail("no IPv6 loopback (::1) in this sandbox")
    with _ping_socket_allowed(kind):
        probe = _ping_probe(kind, [address], packets=3)
        results = await _ping_round(probe, 2)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        assert probe.socket_kinds.get(family) is None  # closed when the probe stopped
    for result in results:
        assert result.success, result.error
        assert result.extras["sent"] == 3
        assert result.extras["received"] == 3
        assert result.gauges["ttl"] == 64
        assert 0 < result.latency < 2.0


async def test_ping_many_targets_share_one_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    targets = [f"127.0.{i // 200}.{i % 200 + 1}" for i in range(300)]
    opened: list[int] = []
    real_open = ping.open_icmp_socket

    def counting_open(family: int, kind: str) -> tuple[trio.socket.SocketType, str]:
        opened.append(family)
        return real_open(family, kind)

    monkeypatch.setattr(ping, "open_icmp_socket", counting_open)
    with _ping_socket_allowed("raw"):
        probe = _ping_probe("raw", targets, packets=2, ip_version=4)
        results = await _ping_round(probe, 0)
    assert opened == [socket.AF_INET]
    assert {r.target for r in results} == set(targets)
    # Each reply went back to the target that sent the request (demultiplexed by sequence).
    assert all(r.success and r.extras["received"] == 2 for r in results), [
        r.error for r in results if not r.success
    ][:3]


async def test_ping_peer_that_does_not_answer() -> None:
    with _ping_socket_allowed("raw"), _sysctl("net.ipv4.icmp_echo_ignore_all", "1"):
        probe = ping.PingProbe(
            ping.Options(socket_kind="raw", packets=2, spacing=0.01, ip_version=4),
            lambda: ["127.0.0.1"],
            interval=0.05,
            timeout=0.3,
        )
        (result,) = await _ping_round(probe, 1)
    assert not result.success
    assert result.timeout
    assert result.extras["sent"] == 2
    assert result.extras["received"] == 0
    assert result.error == "0/2 replies (need 1) within 0.3s"
    # Echo replies switched off: the requests went out, nothing came back.
    assert result.failure == Failure(FailureReason.NO_REPLY, Phase.WAIT)


# -- external --------------------------------------------------------------------------------


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def _external(
    command: list[str], timeout: float = 10.0, **options: object
) -> external.ExternalProbe:
    return external.ExternalProbe(
        external.Options(command=tuple(command), **options),  # type: ignore[arg-type]
        list,
        interval=1.0,
        timeout=timeout,
        probe_name="ext",
        labels={"env": "test"},
    )


async def test_external_success_metrics(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        "ok.sh",
        """
        echo "target $1 port $2 env $3"
        echo "queue_depth 17"
        echo "requests 5"
        echo "codes map:code 200:9 500:1"
        """,
    )
    probe = _external([script, "{host}", "{port}", "{labels[env]}"], counters=("requests",))
    with trio.fail_after(GUARD):
        result = await probe.probe_once("db.local:5432")
    assert result.success, result.error
    assert result.gauges == {"queue_depth": 17.0}
    assert result.extras["requests"] == 5.0
    assert result.extras["codes"] == Map("code", {"200": 9.0, "500": 1.0})


async def test_external_failure_hang_and_flood(tmp_path: Path) -> None:
    failing = _script(tmp_path, "fail.sh", 'echo "disk full" >&2\nexit 3\n')
    pid_file = tmp_path / "child.pid"
    # The hanging script leaves a grandchild behind: the timeout must kill the whole group.
    hanging = _script(tmp_path, "hang.sh", f"sleep 300 &\necho $! > {pid_file}\nwait\n")
    flooding = _script(tmp_path, "flood.sh", "exec yes metric 1\n")
    with trio.fail_after(GUARD):
        failed = await _external([failing]).probe_once("t")
        flooded = await _external([flooding], max_output_bytes=10000).probe_once("t")
        hang_probe = _external([hanging], timeout=0.5)
        send, receive = trio.open_memory_channel[ProbeResult](10)
        targets = ["t"]
        hang_probe.targets = lambda: targets
        hang_probe.interval = 0.05
        async with trio.open_nursery() as nursery:
            await nursery.start(hang_probe.run, send)
            hung = await receive.receive()
            nursery.cancel_scope.cancel()
    assert not failed.success
    assert failed.error == "exit status 3: disk full"
    assert failed.failure == Failure(FailureReason.PROGRAM_FAILED, Phase.RUN)
    assert not flooded.success
    assert flooded.error == "output exceeded max_output_bytes (10000); killed"
    assert flooded.failure == Failure(FailureReason.BODY_TOO_LARGE, Phase.RUN)
    assert hung.timeout
    assert hung.failure == Failure(FailureReason.TIMEOUT, Phase.RUN)
    grandchild = int(pid_file.read_text())
    assert await trio.to_thread.run_sync(_ends, grandchild), "the grandchild outlived the timeout"


def _ends(pid: int) -> bool:
    """Whether ``pid`` is gone (or a zombie: killed, not yet reaped) within the guard time."""
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.01)
    return False


async def test_external_missing_program() -> None:
    result = await _external(["/nonexistent/check"]).probe_once("t")
    assert not result.success
    assert result.error == "cannot run '/nonexistent/check': No such file or directory"
    assert result.failure == Failure(FailureReason.PROGRAM_FAILED, Phase.RUN)
