"""Loopback peers for the socket probe types: socat echo services and a dnsmasq with fixed records.

Each is a child process on a free loopback port, started and waited for by progress (it answers),
never by a sleep. Binaries missing: skip, or fail under ``TRIOPROBE_REQUIRE_REAL=1`` (see
``services.require_binary``).
"""

from __future__ import annotations

import functools
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .services import free_port, require_binary

__all__ = ["dnsmasq", "free_udp_port", "socat_tcp_echo", "socat_udp_echo"]

#: Records the dnsmasq fixture serves (zone ``x.test``).
DNS_A = ("www.x.test", "127.0.0.9")
DNS_TXT = ("t.x.test", "hello probe")
DNS_MX = ("x.test", "mail.x.test", 10)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP (a DNS server listens on both)."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _wait(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited ({proc.returncode}): {log.read_text()[-2000:]}"
            )
        if ready():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{proc.args!r} not ready after {timeout}s: {log.read_text()[-2000:]}")


@contextmanager
def _child(argv: list[str], log: Path, ready: Callable[[], bool]) -> Iterator[None]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(ready, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _udp_echoes(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(b"ready?", ("127.0.0.1", port))
            return s.recv(64) == b"ready?"
        except OSError:
            return False


@contextmanager
def socat_tcp_echo(tmp_path: Path) -> Iterator[int]:
    """A TCP echo service; yields its port."""
    binary = require_binary("socat", "socat")
    port = free_port()
    argv = [binary, f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", "PIPE"]
    with _child(argv, tmp_path / "socat-tcp.log", lambda: _tcp_answers(port)):
        yield port


@contextmanager
def socat_udp_echo(tmp_path: Path) -> Iterator[int]:
    """A UDP echo service (one child per datagram source); yields its port."""
    binary = require_binary("socat", "socat")
    port = free_udp_port()
    argv = [binary, f"UDP4-RECVFROM:{port},bind=127.0.0.1,fork", "PIPE"]
    with _child(argv, tmp_path / "socat-udp.log", lambda: _udp_echoes(port)):
        yield port


def _dns_answers(port: int) -> bool:
    import dns.exception
    import dns.message
    import dns.query

    try:
        query = dns.message.make_query(DNS_A[0], "A")
        dns.query.udp(query, "127.0.0.1", port=port, timeout=0.3)
        return True
    except (OSError, dns.exception.DNSException):
        return False


@contextmanager
def dnsmasq(tmp_path: Path) -> Iterator[int]:
    """An authoritative-only dnsmasq on loopback with the ``DNS_*`` records; yields its port."""
    binary = require_binary("dnsmasq", "dnsmasq-base")
    # Another process may take the port between our check and dnsmasq's bind: try a few.
    for attempt in range(3):
        port = free_udp_tcp_port()
        started = ExitStack()
        log = tmp_path / "dnsmasq.log"
        try:
            started.enter_context(
                _child(_dnsmasq_argv(binary, port), log, functools.partial(_dns_answers, port))
            )
        except RuntimeError as exc:
            if "Address already in use" in str(exc) and attempt < 2:
                continue
            raise
        with started:
            yield port
        return


def _dnsmasq_argv(binary: str, port: int) -> list[str]:
    return [
        binary,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--pid-file=",
        "--log-facility=-",
        # Without it, dnsmasq started as root drops to user "nobody", which may not exist.
        "--user=root",
        f"--address=/{DNS_A[0]}/{DNS_A[1]}",
        f"--txt-record={DNS_TXT[0]},{DNS_TXT[1]}",
        f"--mx-host={DNS_MX[0]},{DNS_MX[1]},{DNS_MX[2]}",
        # Names under x.test without a record are NXDOMAIN, never forwarded.
        "--local=/x.test/",
    ]
