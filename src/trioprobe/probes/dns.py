"""The ``dns`` probe type: ask a DNS server (the target) one question and check the answer.

Targets are servers, ``ip`` or ``ip:port`` (53 by default), as in cloudprober's and blackbox's
dns probes; the question is ``query_name``/``query_type``. dnspython's ``dns.asyncquery`` runs on
Trio (it finds the running library with sniffio). A probe succeeds when the response code is one
of ``valid_rcodes``, the answer section has at least ``min_answers`` records of the asked type and,
with ``answer_regex``, at least one of them (in zone-file text form) matches it. Response codes are
counted in the ``rcode`` map under a fixed set of names (:data:`RCODE_LABELS`, anything else as
``other``), so a server cannot add series.

Over UDP the reply must come from the target's address and port and answer the question sent
(same id and question); any other datagram (a spoof, a stray late reply) is counted in
``ignored_replies`` and the wait goes on until the probe's deadline. A truncated reply (TC bit)
says so in the error, and with ``retry_tcp`` the question is asked again over TCP.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import TYPE_CHECKING, Literal

import attrs
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import trio

from ..failures import Failure, FailureReason, Phase, classify, timed_out
from ..metrics import Map
from ..results import ProbeResult
from . import TargetsFn
from ._net import (
    BACKSTOP,
    ScheduledProbe,
    TargetError,
    at_least,
    check_regex,
    describe_error,
    split_host_port,
)

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["RCODE_LABELS", "DNSProbe", "Options", "make_probe", "rcode_label"]


def _check_type(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        dns.rdatatype.from_text(value)
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(f"{attribute.name}: unknown DNS record type {value!r}") from None


def _check_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        dns.name.from_text(value)
    except dns.exception.DNSException as exc:
        raise ValueError(f"{attribute.name}: {value!r} is not a DNS name: {exc}") from None


def _check_rcodes(
    _: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for code in value:
        try:
            dns.rcode.from_text(code)
        except dns.rcode.UnknownRcode:
            raise ValueError(f"{attribute.name}: unknown response code {code!r}") from None


@attrs.frozen
class Options:
    """Config keys of a ``dns`` probe."""

    query_name: str = attrs.field(validator=_check_name)
    #: Record type: A, AAAA, CNAME, MX, TXT, SRV, NS, SOA, PTR...
    query_type: str = attrs.field(default="A", validator=_check_type)
    protocol: Literal["udp", "tcp"] = "udp"
    #: Response codes that count as success (names, as in ``dig``).
    valid_rcodes: tuple[str, ...] = attrs.field(default=("NOERROR",), validator=_check_rcodes)
    #: Fewest records of ``query_type`` the answer section must hold.
    min_answers: int = attrs.field(default=1, validator=at_least(0))
    #: If set, at least one answer record (zone-file text, e.g. ``"v=spf1 -all"``) must match.
    answer_regex: str | None = attrs.field(default=None, validator=check_regex)
    #: Ask the server to recurse (RD flag).
    recursion: bool = True
    #: Over UDP, ask again over TCP when the reply is truncated (TC bit), as resolvers do.
    retry_tcp: bool = False


#: Response codes exported under their own name in the ``rcode`` map (RFC 1035/2136 and
#: BADVERS); any other (extended codes reach 4,095) is counted as ``other``, so a server cannot
#: grow the label set.
RCODE_LABELS = frozenset(
    {
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
    }
)


def rcode_label(rcode: int) -> str:
    """The ``rcode`` map key of a response code: its name, or ``other`` (see RCODE_LABELS)."""
    try:
        text = dns.rcode.to_text(dns.rcode.Rcode(rcode))
    except ValueError:
        return "other"
    return text if text in RCODE_LABELS else "other"


@attrs.define
class _Exchange:
    """What one query got: the reply (if any), replies ignored, truncation, over TCP or not."""

    response: dns.message.Message | None = None
    ignored: int = 0
    truncated: bool = False


async def _udp_exchange(
    request: dns.message.Message, host: str, port: int, exchange: _Exchange
) -> dns.message.Message:
    """Send ``request`` over UDP and return the first reply that answers it.

    A datagram from another address, one that is not DNS, or a reply with another id or
    question is counted in ``exchange.ignored`` and the wait goes on (until the caller's
    deadline): one spoofed or stray datagram must not fail a probe the real reply would pass.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        await sock.sendto(request.to_wire(), (host, port))
        while True:
            data, source = await sock.recvfrom(65535)
            if _address(source[0]) != _address(host) or source[1] != port:
                exchange.ignored += 1
                continue
            try:
                reply = dns.message.from_wire(data)
            except dns.exception.DNSException:
                exchange.ignored += 1
                continue
            if not request.is_response(reply):
                exchange.ignored += 1
                continue
            return reply


def _address(text: str) -> str:
    # ::ffff:127.0.0.1 and 127.0.0.1, or two spellings of one v6 address, compare equal.
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class DNSProbe(ScheduledProbe[Options]):
    """Sends the configured question to each server target every interval."""

    # The probe keeps its own deadline, so a timeout still reports the replies it ignored.
    backstop = BACKSTOP

    def __init__(
        self, options: Options, targets: TargetsFn, *, interval: float, timeout: float
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        self._name = dns.name.from_text(options.query_name)
        self._rdtype = dns.rdatatype.from_text(options.query_type)
        self._valid = frozenset(dns.rcode.from_text(c) for c in options.valid_rcodes)
        self._pattern = re.compile(options.answer_regex) if options.answer_regex else None

    async def _ask(self, target: str, exchange: _Exchange) -> dns.message.Message:
        host, port = split_host_port(target, 53)
        ipaddress.ip_address(host.partition("%")[0])  # ValueError: servers are IP addresses
        request = dns.message.make_query(self._name, self._rdtype)
        if not self.options.recursion:
            request.flags &= ~dns.flags.RD
        if self.options.protocol == "tcp":
            return await dns.asyncquery.tcp(request, host, port=port)
        response = await _udp_exchange(request, host, port, exchange)
        if response.flags & dns.flags.TC:
            exchange.truncated = True
            if self.options.retry_tcp:
                response = await dns.asyncquery.tcp(request, host, port=port)
        return response

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        rcodes = Map("rcode")
        exchange = _Exchange()
        error: str | None = None
        failure: Failure | None = None
        response: dns.message.Message | None = None
        with trio.move_on_at(started + self.timeout) as deadline:
            try:
                response = await self._ask(target, exchange)
            except (OSError, TargetError, dns.exception.DNSException, ValueError) as exc:
                # ValueError: a target that is not an IP address.
                error = describe_error(exc)
                failure = self._failure_of(exc)
        latency = trio.current_time() - started
        extras: dict[str, int | Map] = {"rcode": rcodes, "ignored_replies": exchange.ignored}
        if deadline.cancelled_caught:
            error = f"timed out after {self.timeout:g}s" + (
                f" ({exchange.ignored} unexpected replies ignored)" if exchange.ignored else ""
            )
            # Unexpected replies only: the server (or someone) answered, but never our question.
            phase = Phase.RECEIVE if exchange.ignored else Phase.WAIT
            return ProbeResult(
                target,
                False,
                latency,
                error=error,
                timeout=True,
                extras=extras,
                failure=timed_out(phase),
            )
        if response is None:
            return ProbeResult(target, False, latency, error=error, extras=extras, failure=failure)
        rcodes.increment(rcode_label(response.rcode()))
        problem, failure = self._check(response)
        if problem is not None and response.flags & dns.flags.TC:
            problem = f"truncated reply (TC; set retry_tcp = true to retry over TCP): {problem}"
        return ProbeResult(
            target, problem is None, latency, error=problem, extras=extras, failure=failure
        )

    def _failure_of(self, exc: BaseException) -> Failure:
        if isinstance(exc, ConnectionRefusedError) and self.options.protocol == "udp":
            # Over UDP a refusal is the ICMP port unreachable the kernel passed on.
            return Failure(FailureReason.UNREACHABLE)
        if isinstance(exc, dns.exception.DNSException):
            return Failure(FailureReason.PROTOCOL)  # a reply that is not a DNS message
        if isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
            return Failure(FailureReason.OTHER, Phase.CONNECT)  # not an IP address:port
        return classify(exc, Phase.CONNECT if self.options.protocol == "tcp" else Phase.SEND)

    def _check(self, response: dns.message.Message) -> tuple[str | None, Failure | None]:
        """Why the reply fails (for people, and classified), or (None, None)."""
        rcode = response.rcode()
        if rcode not in self._valid:
            label = rcode_label(rcode)
            # NXDOMAIN, SERVFAIL, REFUSED...: the name did not resolve.
            return f"response code {label if label != 'other' else rcode}", _DNS
        answers = [
            rdata.to_text()
            for rrset in response.answer
            if rrset.rdtype == self._rdtype
            for rdata in rrset
        ]
        if len(answers) < self.options.min_answers:
            return (
                f"{len(answers)} {self.options.query_type} answer(s), "
                f"expected at least {self.options.min_answers}"
            ), _DNS
        if self._pattern is not None and not any(self._pattern.search(a) for a in answers):
            shown = ", ".join(answers[:3])[:120]
            problem = f"no answer matched /{self._pattern.pattern}/ (got: {shown or 'none'})"
            return problem, _ANSWER_REGEX
        return None, None


_DNS = Failure(FailureReason.DNS)
_ANSWER_REGEX = Failure(FailureReason.VALIDATION, validator="answer_regex")


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> DNSProbe:
    return DNSProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
