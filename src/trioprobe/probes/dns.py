"""The ``dns`` probe type: ask a DNS server (the target) one question and check the answer.

Targets are servers, ``ip`` or ``ip:port`` (53 by default), as in cloudprober's and blackbox's
dns probes; the question is ``query_name``/``query_type``. dnspython's ``dns.asyncquery`` runs on
Trio (it finds the running library with sniffio). A probe succeeds when the response code is one
of ``valid_rcodes``, the answer section has at least ``min_answers`` records of the asked type and,
with ``answer_regex``, at least one of them (in zone-file text form) matches it. Response codes are
counted in the ``rcode`` map; the deadline is the scheduler's cancel scope.
"""

from __future__ import annotations

import re
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

from ..metrics import Map
from ..results import ProbeResult
from . import TargetsFn
from ._net import (
    ScheduledProbe,
    TargetError,
    at_least,
    check_regex,
    describe_error,
    split_host_port,
)

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["Options", "DNSProbe", "make_probe"]


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


class DNSProbe(ScheduledProbe[Options]):
    """Sends the configured question to each server target every interval."""

    def __init__(
        self, options: Options, targets: TargetsFn, *, interval: float, timeout: float
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        self._name = dns.name.from_text(options.query_name)
        self._rdtype = dns.rdatatype.from_text(options.query_type)
        self._valid = frozenset(dns.rcode.from_text(c) for c in options.valid_rcodes)
        self._pattern = re.compile(options.answer_regex) if options.answer_regex else None
        self._query = dns.asyncquery.tcp if options.protocol == "tcp" else dns.asyncquery.udp

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        rcodes = Map("rcode")
        extras = {"rcode": rcodes}
        try:
            host, port = split_host_port(target, 53)
            request = dns.message.make_query(self._name, self._rdtype)
            if not self.options.recursion:
                request.flags &= ~dns.flags.RD
            response = await self._query(request, host, port=port)
        except (OSError, TargetError, dns.exception.DNSException, ValueError) as exc:
            # ValueError: dnspython's answer to a target that is not an IP address.
            error = describe_error(exc)
            return ProbeResult(
                target, False, trio.current_time() - started, error=error, extras=extras
            )
        latency = trio.current_time() - started
        rcode = response.rcode()
        rcodes.increment(dns.rcode.to_text(rcode))
        problem = self._check(response)
        return ProbeResult(target, problem is None, latency, error=problem, extras=extras)

    def _check(self, response: dns.message.Message) -> str | None:
        rcode = response.rcode()
        if rcode not in self._valid:
            return f"response code {dns.rcode.to_text(rcode)}"
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
            )
        if self._pattern is not None and not any(self._pattern.search(a) for a in answers):
            shown = ", ".join(answers[:3])[:120]
            return f"no answer matched /{self._pattern.pattern}/ (got: {shown or 'none'})"
        return None


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> DNSProbe:
    return DNSProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
