"""The demo shows the tcp and dns probe types against its in-process servers."""

from __future__ import annotations

import re

import pytest
import trio

from trioprobe.cli import main
from trioprobe.cli._demo import DEMO_DNS_NAME, serve_demo_dns, serve_echo
from trioprobe.metrics import Map
from trioprobe.probes import dns, tcp


def test_demo_shows_tcp_and_dns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("echo", "resolver"):
        lines = [line for line in out.splitlines() if line.startswith(f"{name} 127.0.0.1:")]
        assert lines, out
        # Some probes succeeded (not all need to: the machine may be loaded).
        assert not re.search(r"success=0\.0%", lines[-1]), lines[-1]


async def test_demo_servers_answer_and_refuse() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            echo_addr = await nursery.start(serve_echo)
            dns_addr = await nursery.start(serve_demo_dns)
            echo = tcp.TCPProbe(tcp.Options(query="x1\n", expect="x1"), list, interval=1, timeout=5)
            known = dns.DNSProbe(dns.Options(query_name=DEMO_DNS_NAME), list, interval=1, timeout=5)
            unknown = dns.DNSProbe(
                dns.Options(query_name="other.test"), list, interval=1, timeout=5
            )
            echoed = await echo.probe_once(echo_addr)
            found = await known.probe_once(dns_addr)
            missing = await unknown.probe_once(dns_addr)
            nursery.cancel_scope.cancel()
    assert echoed.success, echoed.error
    assert found.success, found.error
    assert not missing.success
    assert missing.extras["rcode"] == Map("rcode", {"NXDOMAIN": 1})
