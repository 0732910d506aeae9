"""The ``udp`` probe type: a numbered datagram to an echo service, matched by its echo.

As cloudprober's udp probe: each target has its own connected UDP socket and a task reading its
replies. A request carries a magic, a 64-bit sequence number and the send time; a probe waits for
the echo of *its* sequence number only. An echo that arrives after its probe gave up counts in
``late`` (and is never taken for a later probe's reply); one whose sequence number is lower
than one already seen (it was overtaken) counts in ``reordered``. Lost datagrams are the probes
that timed out (``total - success``). ``late`` and ``reordered`` are reported with the next
result of the target.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import TYPE_CHECKING

import attrs
import trio

from .._urls import host_name_problem
from ..failures import Failure, FailureReason, Phase, classify, enter_phase
from ..results import ProbeResult
from . import TargetsFn
from ._base import ClientPerTargetProbe, PerTargetClients
from ._net import TargetError, check_target_host, describe_error, split_host_port

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["Options", "UDPProbe", "check_target", "make_probe"]

# magic (4 bytes), sequence number, send time in ns (wall clock, for a peer's own use).
_HEADER = struct.Struct("!4sQQ")


def _check_size(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not _HEADER.size <= value <= 65507:
        raise ValueError(f"{attribute.name} must be between {_HEADER.size} and 65507, got {value}")


@attrs.frozen
class Options:
    """Config keys of a ``udp`` probe."""

    #: Port for targets given without one.
    port: int | None = None
    #: Datagram size in bytes (header plus padding).
    payload_size: int = attrs.field(default=_HEADER.size, validator=_check_size)


@attrs.define
class _Peer:
    """One target's socket, its reader task's scope, and the replies still awaited."""

    socket: trio.socket.SocketType | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    next_seq: int = 0
    highest_seen: int = -1
    pending: dict[int, trio.Event] = attrs.field(factory=dict)
    late: int = 0
    reordered: int = 0
    #: Sequence numbers whose wait an ICMP port unreachable ended.
    refused: set[int] = attrs.field(factory=set)


class UDPProbe(ClientPerTargetProbe[_Peer]):
    """Probes each target with its own socket; see the module docstring."""

    def __init__(
        self, options: Options, targets: TargetsFn, *, interval: float, timeout: float
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        # Per probe, so a reply to another prober's socket reused after ours is not ours.
        self._magic = os.urandom(4)
        self._nursery: trio.Nursery | None = None
        self._clients = PerTargetClients[_Peer](lambda _target: _Peer(), self._close_peer)

    @staticmethod
    async def _close_peer(peer: _Peer) -> None:
        peer.scope.cancel()
        if peer.socket is not None:
            peer.socket.close()

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # The reader tasks live in this nursery; cancelling the probe ends them with it.
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await super().run(results, task_status=task_status)

    async def _open(self, target: str, peer: _Peer) -> trio.socket.SocketType:
        host, port = split_host_port(target, self.options.port)
        problem = host_name_problem(host)
        if problem is not None:
            raise TargetError(f"target {target!r}: {problem}")
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            raise TargetError(f"target {target!r}: no address")
        family, type_, proto, _, address = infos[0]
        sock = trio.socket.socket(family, type_, proto)
        try:
            await sock.connect(address)
        except BaseException:
            sock.close()
            raise
        assert self._nursery is not None, "UDPProbe.probe_once runs under run()"
        # A fresh scope: a socket that broke is replaced, and a scope can be entered only once.
        peer.scope = trio.CancelScope()
        self._nursery.start_soon(self._read_replies, sock, peer)
        return sock

    async def _read_replies(self, sock: trio.socket.SocketType, peer: _Peer) -> None:
        with peer.scope:
            while True:
                try:
                    data = await sock.recv(65535)
                except ConnectionRefusedError:
                    # An ICMP port unreachable: nobody listens (yet). The probes waiting for a
                    # reply fail now, as `unreachable`; keep reading for the next ones.
                    for seq, waiting in peer.pending.items():
                        peer.refused.add(seq)
                        waiting.set()
                    peer.pending.clear()
                    continue
                except OSError:
                    # Anything else breaks this socket: drop it, the next probe opens another.
                    sock.close()
                    if peer.socket is sock:
                        peer.socket = None
                    return
                if len(data) < _HEADER.size:
                    continue
                magic, seq, _ = _HEADER.unpack_from(data)
                if magic != self._magic:
                    continue
                if seq >= peer.next_seq:
                    continue  # never sent: not an echo of ours
                if seq < peer.highest_seen:
                    peer.reordered += 1  # overtaken by the echo of a later request
                peer.highest_seen = max(peer.highest_seen, seq)
                event = peer.pending.pop(seq, None)
                if event is None:
                    peer.late += 1  # its probe gave up: never taken for a later probe's reply
                    continue
                event.set()

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        peer = self._clients.get(target)
        try:
            if peer.socket is None:
                enter_phase(Phase.DNS)  # getaddrinfo; the connect of a UDP socket cannot wait
                peer.socket = await self._open(target, peer)
            seq = peer.next_seq
            peer.next_seq += 1
            event = peer.pending[seq] = trio.Event()
            header = _HEADER.pack(self._magic, seq, time.time_ns())
            payload = header.ljust(self.options.payload_size, b"\0")
            try:
                enter_phase(Phase.SEND)
                await peer.socket.send(payload)
                # The deadline running out here is a datagram without an echo.
                enter_phase(Phase.WAIT, on_timeout=FailureReason.NO_REPLY)
                await event.wait()
            finally:
                # Timed out or failed: a reply that still comes is late, not this probe's.
                peer.pending.pop(seq, None)
        except (OSError, TargetError, UnicodeError) as exc:
            error = describe_error(exc)
            latency = trio.current_time() - started
            failure = _failure_of(exc)
            return ProbeResult(
                target, False, latency, error=error, extras=self._counts(peer), failure=failure
            )
        latency = trio.current_time() - started
        if seq in peer.refused:
            peer.refused.discard(seq)
            error = "ICMP port unreachable: nothing listens on the port"
            return ProbeResult(
                target, False, latency, error=error, extras=self._counts(peer), failure=_ICMP
            )
        return ProbeResult(target, True, latency, extras=self._counts(peer))

    @staticmethod
    def _counts(peer: _Peer) -> dict[str, int]:
        # Taken only by a result this probe builds: after a timeout (the scheduler's result)
        # they carry over to the target's next result instead of being lost.
        counts = {"late": peer.late, "reordered": peer.reordered}
        peer.late = peer.reordered = 0
        return counts


_ICMP = Failure(FailureReason.UNREACHABLE)


def _failure_of(exc: BaseException) -> Failure:
    if isinstance(exc, ConnectionRefusedError):
        return _ICMP  # a send after an ICMP port unreachable reports it too
    if isinstance(exc, TargetError):
        return Failure(FailureReason.OTHER, Phase.CONNECT)
    return classify(exc)


#: Raises ``ValueError`` for a target whose host cannot be resolved (``a..b:80``).
check_target = check_target_host


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> UDPProbe:
    return UDPProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
