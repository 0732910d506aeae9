"""The ``ping`` probe type: ICMP echo, with one socket per address family shared by all targets.

Like smokeping_prober and cloudprober, a probe opens one ICMP socket per address family and one
reader task per socket; every target's echo requests go out on it and replies are matched back
by sequence number (and identifier on raw sockets), so 1,000 targets need two sockets, not 1,000.

Socket kinds: an unprivileged ``SOCK_DGRAM`` ICMP socket (Linux "ping sockets", allowed when the
process's group is inside ``net.ipv4.ping_group_range``; the kernel then picks the identifier and
only delivers our own replies), or a ``SOCK_RAW`` socket (root or ``CAP_NET_RAW``; we pick a random
identifier and filter every ICMP message of the host). ``socket_kind = "auto"`` tries them in that
order; when neither is permitted the probe does not start and says why.

Each probe of a target sends ``packets`` echo requests ``spacing`` seconds apart and waits for the
replies until the probe's ``timeout``. It reports ``sent`` and ``received`` (loss is their
difference), every round-trip time in the ``rtt`` distribution (in seconds), the TTL (hop
limit on IPv6) of the last reply as a gauge, and as latency the mean RTT. It succeeds when at least
``min_replies`` replies came back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from .._urls import check_host_name, host_name_problem
from ..failures import Failure, FailureReason, Phase, classify
from ..metrics import Distribution
from ..results import LATENCY_UNITS, ProbeResult
from . import TargetsFn
from ._net import BACKSTOP, ScheduledProbe, at_least

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = [
    "Options",
    "PingProbe",
    "PingSocketError",
    "check_target",
    "make_probe",
    "open_icmp_socket",
]

_ICMP_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
_PROTO: dict[int, int] = {
    socket.AF_INET: socket.IPPROTO_ICMP,
    socket.AF_INET6: socket.IPPROTO_ICMPV6,
}
_MAGIC_SIZE = 8
# Not exported by the socket module; the Linux value.
_IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1
_RECEIVE_BUFFER = 4 << 20
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_TTL_MESSAGES = frozenset(
    {(socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)}
)
_TIMESTAMP_MESSAGE = (socket.SOL_SOCKET, _SO_TIMESTAMPNS)
_ANCILLARY_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(_TIMESPEC.size)


class PingSocketError(OSError):
    """No ICMP socket of any permitted kind could be opened; the message says what to change."""


@attrs.frozen
class Options:
    """Config keys of a ``ping`` probe."""

    #: Echo requests per probe of a target.
    packets: int = attrs.field(default=1, validator=at_least(1))
    #: Seconds between the requests of one probe.
    spacing: float = attrs.field(default=0.1, validator=at_least(0))
    #: Replies needed for the probe to count as a success.
    min_replies: int = attrs.field(default=1, validator=at_least(0))
    #: Bytes of data after the ICMP header (at least 8: a per-probe magic).
    payload_size: int = attrs.field(default=56, validator=at_least(_MAGIC_SIZE))
    #: ``dgram`` (unprivileged ping socket), ``raw`` (root) or ``auto`` (dgram, then raw).
    socket_kind: Literal["auto", "dgram", "raw"] = "auto"
    #: Resolve names to this IP version only (0: whichever comes first).
    ip_version: Literal[0, 4, 6] = 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def _ping_group_range() -> str:
    try:
        return " ".join(Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    except OSError:
        return "unknown"


def open_icmp_socket(family: int, kind: str) -> tuple[trio.socket.SocketType, str]:
    """An ICMP socket of ``kind`` (``auto``, ``dgram``, ``raw``) and the kind opened.

    Raises :class:`PingSocketError` naming each refusal and what would allow it.
    """
    kinds = ["dgram", "raw"] if kind == "auto" else [kind]
    problems = []
    for name in kinds:
        sock_type = socket.SOCK_DGRAM if name == "dgram" else socket.SOCK_RAW
        try:
            sock = trio.socket.socket(family, sock_type, _PROTO[family])
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM) and name == "dgram":
                problems.append(
                    f"unprivileged ICMP (SOCK_DGRAM) sockets are not allowed for group "
                    f"{os.getgid()} (net.ipv4.ping_group_range is {_ping_group_range()!r}; "
                    f"widen it with sysctl)"
                )
            elif exc.errno in (errno.EACCES, errno.EPERM):
                problems.append("raw ICMP sockets need root or the CAP_NET_RAW capability")
            else:
                problems.append(f"{name} ICMP socket: {exc.strerror or exc}")
            continue
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        if name == "raw":
            _only_echo_replies(sock, family)
        _grow_receive_buffer(sock)
        # The kernel's receive time: with 1,000 targets the reader task may run milliseconds
        # after a reply arrived (behind the send burst), which must not count as round trip.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        return sock, name
    version = "IPv4" if family == socket.AF_INET else "IPv6"
    raise PingSocketError(f"cannot open an {version} ICMP socket: {'; '.join(problems)}")


def _only_echo_replies(sock: trio.socket.SocketType, family: int) -> None:
    # A raw socket gets every ICMP message of the host, our own echo requests to local addresses
    # included; a kernel filter keeps them (and anything but echo replies) out of its buffer.
    with contextlib.suppress(OSError):
        if family == socket.AF_INET:
            blocked = 0xFFFFFFFF & ~(1 << _ECHO_REPLY[family])
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", blocked))
        else:
            words = [0xFFFFFFFF] * 8  # a set bit blocks that ICMPv6 type
            reply = _ECHO_REPLY[family]
            words[reply >> 5] &= ~(1 << (reply & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *words))


def _grow_receive_buffer(sock: trio.socket.SocketType) -> None:
    # One socket carries the replies of every target: 1,000 targets answering at the same tick
    # overflow the default buffer (~200 KiB holds a few hundred datagrams). As root the limit
    # (net.core.rmem_max) can be bypassed; otherwise the kernel caps it.
    for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _RECEIVE_BUFFER)
            return
        except OSError:
            continue


@attrs.define
class _Round:
    """One probe of one target: the replies it still waits for."""

    address: str
    expected: int
    rtts: list[float] = attrs.field(factory=list)
    ttl: int | None = None
    done: trio.Event = attrs.field(factory=trio.Event)


@attrs.define
class _Pending:
    round: _Round
    #: Trio's clock at the send, for when the kernel gives no receive timestamp.
    sent_at: float
    #: Wall clock (ns) at the send, to compare with the kernel's receive timestamp.
    sent_ns: int = attrs.field(factory=time.time_ns)


class _IcmpSocket:
    """One ICMP socket, the requests in flight on it, and the task matching their replies."""

    def __init__(self, sock: trio.socket.SocketType, kind: str, family: int) -> None:
        self.sock = sock
        self.kind = kind
        self.family = family
        # A raw socket sees every ICMP message of the host: our identifier and magic pick ours.
        # A ping socket gets the kernel's identifier and only its own replies.
        self.ident = int.from_bytes(os.urandom(2), "big")
        self.magic = os.urandom(_MAGIC_SIZE)
        self.pending: dict[int, _Pending] = {}
        self._next_seq = 0

    def allocate(self, entry: _Pending) -> int:
        """A sequence number not in flight (the 16-bit space is shared by all targets)."""
        for _ in range(65536):
            seq = self._next_seq
            self._next_seq = (seq + 1) & 0xFFFF
            if seq not in self.pending:
                self.pending[seq] = entry
                return seq
        raise OSError(errno.ENOBUFS, "65,536 echo requests in flight on one socket")

    def packet(self, seq: int, payload_size: int) -> bytes:
        data = self.magic.ljust(payload_size, b"\0")
        request = _ECHO_REQUEST[self.family]
        header = _ICMP_HEADER.pack(request, 0, 0, self.ident, seq)
        if self.family == socket.AF_INET:
            # The kernel fills in ICMPv6 checksums (they cover the IPv6 pseudo-header), not v4's.
            header = _ICMP_HEADER.pack(request, 0, _checksum(header + data), self.ident, seq)
        return header + data

    async def read_replies(self) -> None:
        while True:
            try:
                data, ancdata, _, address = await self.sock.recvmsg(65535, _ANCILLARY_SPACE)
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    return
                continue  # e.g. an ICMP error queued on the socket; replies keep coming
            received = trio.current_time()
            ttl = None
            kernel_ns = None
            for level, type_, value in ancdata:
                if (level, type_) in _TTL_MESSAGES and len(value) >= 4:
                    ttl = int.from_bytes(value[:4], sys.byteorder)
                elif (level, type_) == _TIMESTAMP_MESSAGE and len(value) >= _TIMESPEC.size:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                    kernel_ns = seconds * 1_000_000_000 + nanoseconds
            if self.kind == "raw" and self.family == socket.AF_INET and data:
                # Raw IPv4 sockets deliver the IP header too.
                ttl = data[8] if len(data) > 8 else ttl
                data = data[(data[0] & 0x0F) * 4 :]
            source = str(address[0]) if isinstance(address, tuple) else ""
            self._match(data, source, received, kernel_ns, ttl)

    def _match(
        self, data: bytes, source: str, received: float, kernel_ns: int | None, ttl: int | None
    ) -> None:
        if len(data) < _ICMP_HEADER.size + _MAGIC_SIZE:
            return
        type_, _, _, ident, seq = _ICMP_HEADER.unpack_from(data)
        if type_ != _ECHO_REPLY[self.family]:
            return
        if self.kind == "raw" and ident != self.ident:
            return
        if data[_ICMP_HEADER.size : _ICMP_HEADER.size + _MAGIC_SIZE] != self.magic:
            return
        entry = self.pending.get(seq)
        if entry is None or entry.round.address != source.partition("%")[0]:
            return  # late (its probe is over), or not from where we sent it
        del self.pending[seq]
        round_ = entry.round
        if kernel_ns is not None and kernel_ns >= entry.sent_ns:
            round_.rtts.append((kernel_ns - entry.sent_ns) / 1e9)
        else:
            round_.rtts.append(received - entry.sent_at)
        round_.ttl = ttl
        if len(round_.rtts) >= round_.expected:
            round_.done.set()


class PingProbe(ScheduledProbe[Options]):
    """Pings every target through shared sockets; see the module docstring."""

    # The probe keeps its own deadline (see probe_once); the scheduler's is a backstop.
    backstop = BACKSTOP

    def __init__(
        self,
        options: Options,
        targets: TargetsFn,
        *,
        interval: float,
        timeout: float,
        rtt_buckets: Distribution | None = None,
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        # Default buckets: 100 µs doubling up to ~3 s.
        self._rtt_buckets = rtt_buckets or Distribution.exponential(base=2.0, scale=1e-4, count=16)
        self._sockets: dict[int, _IcmpSocket] = {}
        self._socket_errors: dict[int, str] = {}
        self._addresses: dict[str, tuple[int, str]] = {}

    @property
    def socket_kinds(self) -> dict[int, str]:
        """The kind of socket opened per address family (for tests and diagnostics)."""
        return {family: s.kind for family, s in self._sockets.items()}

    def _open_sockets(self) -> None:
        families = {4: [socket.AF_INET], 6: [socket.AF_INET6]}.get(
            self.options.ip_version, [socket.AF_INET, socket.AF_INET6]
        )
        for family in families:
            try:
                sock, kind = open_icmp_socket(family, self.options.socket_kind)
            except OSError as exc:
                self._socket_errors[family] = str(exc)
                continue
            self._sockets[family] = _IcmpSocket(sock, kind, family)
        if not self._sockets:
            raise PingSocketError("; ".join(self._socket_errors.values()))

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._open_sockets()
        try:
            async with trio.open_nursery() as nursery:
                for icmp in self._sockets.values():
                    nursery.start_soon(icmp.read_replies)
                await super().run(results, task_status=task_status)
        finally:
            for icmp in self._sockets.values():
                icmp.sock.close()
            self._sockets.clear()

    async def forget(self, target: str) -> None:
        self._addresses.pop(target, None)

    async def _resolve(self, target: str) -> tuple[int, str]:
        cached = self._addresses.get(target)
        if cached is not None:
            return cached
        problem = host_name_problem(target)
        if problem is not None:
            raise OSError(problem)
        family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(self.options.ip_version, 0)
        infos = await trio.socket.getaddrinfo(target, None, family, socket.SOCK_RAW)
        if not infos:
            raise OSError(f"{target}: no address")
        resolved = self._addresses[target] = (infos[0][0], str(infos[0][4][0]))
        return resolved

    def _fail(self, target: str, started: float, error: str, failure: Failure) -> ProbeResult:
        extras = {"sent": 0, "received": 0}
        latency = trio.current_time() - started
        return ProbeResult(target, False, latency, error=error, extras=extras, failure=failure)

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        try:
            family, address = await self._resolve(target)
        except (OSError, UnicodeError) as exc:
            error = f"cannot resolve {target!r}: {exc}"
            return self._fail(target, started, error, Failure(FailureReason.DNS))
        icmp = self._sockets.get(family)
        if icmp is None:
            error = self._socket_errors.get(family, "no socket")
            return self._fail(target, started, error, Failure(FailureReason.OTHER, Phase.CONNECT))
        round_ = _Round(address, self.options.packets)
        seqs: list[int] = []
        send_error: OSError | None = None
        # The probe's own deadline: a timeout is an ordinary result with whatever replies came
        # back. The scheduler's scope ends BACKSTOP later (Trio's outer cancelled scope would
        # catch the Cancelled if both expired together).
        with trio.move_on_at(started + self.timeout):
            try:
                for i in range(self.options.packets):
                    if i:
                        await trio.sleep(self.options.spacing)
                    seq = icmp.allocate(_Pending(round_, trio.current_time()))
                    seqs.append(seq)
                    await icmp.sock.sendto(
                        icmp.packet(seq, self.options.payload_size), (address, 0)
                    )
                await round_.done.wait()
            except OSError as exc:
                send_error = exc
            finally:
                for seq in seqs:
                    icmp.pending.pop(seq, None)
        return self._result(target, started, round_, len(seqs), send_error)

    def _result(
        self, target: str, started: float, round_: _Round, sent: int, send_error: OSError | None
    ) -> ProbeResult:
        rtt = self._rtt_buckets.clone()
        for value in round_.rtts:
            rtt.add_sample(value)
        received = len(round_.rtts)
        extras = {"sent": sent, "received": received, "rtt": rtt}
        gauges = {"ttl": round_.ttl} if round_.ttl is not None else {}
        latency = sum(round_.rtts) / received if received else trio.current_time() - started
        if received >= self.options.min_replies and send_error is None:
            return ProbeResult(target, True, latency, extras=extras, gauges=gauges)
        if send_error is not None:
            error = f"send: {send_error.strerror or send_error}"
            failure = classify(send_error, Phase.SEND)
            if failure.reason is FailureReason.OTHER:
                failure = Failure(FailureReason.SEND)
        else:
            error = (
                f"{received}/{sent} replies (need {self.options.min_replies}) "
                f"within {self.timeout:g}s"
            )
            # Too few echo replies: the deadline ran out waiting for them.
            failure = Failure(FailureReason.NO_REPLY)
        return ProbeResult(
            target,
            False,
            latency,
            error=error,
            timeout=received == 0,
            extras=extras,
            gauges=gauges,
            failure=failure,
        )


#: Raises ``ValueError`` for a target (a host name or IP address) that cannot be resolved.
check_target = check_host_name


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> PingProbe:
    buckets = (
        spec.latency_buckets.distribution(LATENCY_UNITS[spec.latency_unit])
        if spec.latency_buckets
        else None
    )
    return PingProbe(
        options,
        targets,
        interval=spec.interval,
        timeout=spec.timeout,
        rtt_buckets=buckets,
    )
