"""Why a probe failed: one bounded vocabulary shared by every probe type.

A page at 3 a.m. must say what broke. Before this module a failure was only ``timeout`` or
``error``, and the why was free text in ``ProbeResult.error`` (unbounded, so unusable as a metric
label, and worded differently by each probe type). Here every failure is classified once, by the
probe that saw it, into a :class:`FailureReason` and the :class:`Phase` of the probe it happened
in. Both are closed ``str`` enums, so they are safe as Prometheus labels
(``trioprobe_failures_total{reason, phase}``), as InfluxDB fields, in ``/status.json`` and in
notifications, and a dashboard or an Alertmanager route can match on them.

A probe says where it is with :func:`enter_phase` as it goes; when the scheduler's deadline
cancels a probe, the timeout is blamed on the phase last entered (:func:`timed_out`), so
``timeout`` always carries the phase it ran out in.

:func:`classify` turns the exceptions the transports raise into a :class:`Failure` (and
:func:`from_cause` the socket types' own ``errors{cause}`` keys); a transport with typed errors
of its own can call it with those, or build a :class:`Failure` directly. The enums and the
tracker live in the private leaf ``trioprobe._phases`` (importable by transports that must not
load the rest); they are documented and exported here.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator

import attrs

from ._phases import (
    FailureReason,
    Phase,
    PhaseTracker,
    current_phase,
    enter_phase,
    track_phases,
)

__all__ = [
    "Failure",
    "FailureReason",
    "Phase",
    "PhaseTracker",
    "classify",
    "current_phase",
    "deadline_failure",
    "from_cause",
    "enter_phase",
    "track_phases",
    "timed_out",
]


#: The phase each reason happens in when the probe did not say (``timeout`` and ``other``
#: take the phase the probe was in).
DEFAULT_PHASE: dict[FailureReason, Phase] = {
    FailureReason.DNS: Phase.DNS,
    FailureReason.CONNECT_REFUSED: Phase.CONNECT,
    FailureReason.CONNECT_TIMEOUT: Phase.CONNECT,
    FailureReason.CONNECT_ERROR: Phase.CONNECT,
    FailureReason.TLS_HANDSHAKE: Phase.TLS,
    FailureReason.TLS_VERIFY: Phase.TLS,
    FailureReason.TLS_EXPIRED: Phase.TLS,
    FailureReason.SEND: Phase.SEND,
    FailureReason.HTTP_STATUS: Phase.VALIDATE,
    FailureReason.VALIDATION: Phase.VALIDATE,
    FailureReason.PROTOCOL: Phase.RECEIVE,
    FailureReason.BODY_TOO_LARGE: Phase.RECEIVE,
    FailureReason.UNREACHABLE: Phase.WAIT,
    FailureReason.NO_REPLY: Phase.WAIT,
    FailureReason.PROGRAM_FAILED: Phase.RUN,
    FailureReason.RESOURCE: Phase.CONNECT,
}


def _reason(value: FailureReason | str) -> FailureReason:
    return FailureReason(value)


def _phase(value: Phase | str | None) -> Phase | None:
    return None if value is None else Phase(value)


@attrs.frozen
class Failure:
    """One classified failure: a reason, the phase it happened in, and for ``validation`` the
    validator that rejected the reply.

    ``phase`` may be left out: it then defaults to the reason's usual phase
    (:data:`DEFAULT_PHASE`), or, for ``timeout`` and ``other``, the phase the probe last entered
    (:func:`current_phase`), so a probe that tracks its phases need not repeat them.
    """

    reason: FailureReason = attrs.field(converter=_reason)
    phase: Phase = attrs.field(default=None, converter=_phase)
    validator: str | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.phase is None:
            phase = DEFAULT_PHASE.get(self.reason) or current_phase()
            object.__setattr__(self, "phase", phase)

    @property
    def label(self) -> str:
        """For people (the live table, notices): ``timeout (connect)``, ``validation
        (body_regex)``, ``connect_refused``: the reason, with the phase only where it adds."""
        if self.validator:
            return f"{self.reason.value} ({self.validator})"
        if self.reason in (FailureReason.TIMEOUT, FailureReason.OTHER) and (
            self.phase is not Phase.UNKNOWN
        ):
            return f"{self.reason.value} ({self.phase.value})"
        return self.reason.value

    @property
    def key(self) -> str:
        """The key of this failure in the ``failures`` metric's map: ``reason/phase``."""
        return f"{self.reason.value}/{self.phase.value}"

    def as_dict(self) -> dict[str, str]:
        """For JSON (``/status.json``, webhooks): ``reason``, ``phase`` and maybe ``validator``."""
        out = {"reason": self.reason.value, "phase": self.phase.value}
        if self.validator:
            out["validator"] = self.validator
        return out


def deadline_failure(tracker: PhaseTracker) -> Failure:
    """The failure of a deadline that ran out while ``tracker``'s probe was where it says."""
    if tracker.on_timeout is not None:
        return Failure(tracker.on_timeout, tracker.phase)
    return timed_out(tracker.phase)


def timed_out(phase: Phase | None = None) -> Failure:
    """The deadline ran out in ``phase`` (by default, the phase last entered in this task).

    In the connect phase that is ``connect_timeout`` (nothing answered the SYN: a firewall that
    drops, a full backlog), the reason operators look for; elsewhere ``timeout`` with the phase.
    """
    where = phase if phase is not None else current_phase()
    if where is Phase.CONNECT:
        return Failure(FailureReason.CONNECT_TIMEOUT)
    return Failure(FailureReason.TIMEOUT, where)


#: ``errno`` values that mean the prober, not the target, ran out of something.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: ``errno`` values an ICMP destination-unreachable (or no route at all) turns into.
UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})
# OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED: a certificate outside
# its validity period is a date problem (renew it), not a trust problem (fix the chain).
_X509_DATES = frozenset({9, 10})

# Exception class names (httpx's, and the lean path's ``LeanError.kind``, which borrows them) ->
# what they mean when no more precise cause is found inside. By name, so this module needs
# neither httpx nor the transports, and a transport with its own typed errors can reuse the names.
_BY_NAME: dict[str, tuple[FailureReason, Phase]] = {
    "ConnectError": (FailureReason.CONNECT_ERROR, Phase.CONNECT),
    "ConnectTimeout": (FailureReason.CONNECT_TIMEOUT, Phase.CONNECT),
    "PoolTimeout": (FailureReason.TIMEOUT, Phase.CONNECT),
    "WriteError": (FailureReason.SEND, Phase.SEND),
    "WriteTimeout": (FailureReason.TIMEOUT, Phase.SEND),
    "ReadError": (FailureReason.NO_REPLY, Phase.WAIT),
    "ReadTimeout": (FailureReason.TIMEOUT, Phase.WAIT),
    "RemoteProtocolError": (FailureReason.PROTOCOL, Phase.RECEIVE),
    "LocalProtocolError": (FailureReason.OTHER, Phase.SEND),
    "BodyTooLarge": (FailureReason.BODY_TOO_LARGE, Phase.RECEIVE),
    "DecodingError": (FailureReason.PROTOCOL, Phase.RECEIVE),
    "TooManyRedirects": (FailureReason.HTTP_STATUS, Phase.VALIDATE),
}
# Words a peer that closed without answering is reported with (httpx's and the lean path's).
_NO_RESPONSE = "without sending a response"
# How both HTTP paths word a body over max_body_bytes ("... larger than the 1024-byte limit").
_BODY_LIMIT = "-byte limit"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what is inside it: causes, contexts (a transport that re-raises ``from None``
    still keeps the OS error as ``__context__``) and the members of exception groups."""
    seen: set[int] = set()
    stack = [exc]
    while stack and len(seen) < 32:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(reversed(current.exceptions))
        for inner in (current.__context__, current.__cause__):
            if inner is not None:
                stack.append(inner)


def _from_leaf(leaf: BaseException, phase: Phase) -> Failure | None:
    """The failure a low-level error means on its own, or None if it says nothing specific."""
    if isinstance(leaf, socket.gaierror | UnicodeError):
        # UnicodeError: the resolver's IDNA encoding refused the name (an empty or long label).
        return Failure(FailureReason.DNS)
    if isinstance(leaf, ssl.SSLCertVerificationError):
        code = getattr(leaf, "verify_code", None)
        if code in _X509_DATES or "expired" in str(getattr(leaf, "verify_message", "")):
            return Failure(FailureReason.TLS_EXPIRED)
        return Failure(FailureReason.TLS_VERIFY)
    if isinstance(leaf, ssl.CertificateError):
        return Failure(FailureReason.TLS_VERIFY)
    if isinstance(leaf, ssl.SSLError):
        return Failure(FailureReason.TLS_HANDSHAKE)
    if isinstance(leaf, ConnectionRefusedError):
        return Failure(FailureReason.CONNECT_REFUSED)
    if isinstance(leaf, OSError) and leaf.errno in RESOURCE_ERRNOS:
        return Failure(FailureReason.RESOURCE, phase)
    if isinstance(leaf, OSError) and leaf.errno in UNREACHABLE_ERRNOS:
        return Failure(FailureReason.UNREACHABLE, phase)
    if isinstance(leaf, TimeoutError):
        if phase is Phase.CONNECT:
            return Failure(FailureReason.CONNECT_TIMEOUT)
        return Failure(FailureReason.TIMEOUT, phase)
    return None


def _from_name(exc: BaseException, phase: Phase) -> Failure | None:
    names = [getattr(exc, "kind", None), *(cls.__name__ for cls in type(exc).__mro__)]
    for name in names:
        if not isinstance(name, str):
            continue
        known = _BY_NAME.get(name.lstrip("_"))
        if known is None:
            continue
        reason, usual = known
        if name == "ReadError" and _BODY_LIMIT in str(exc):
            # The lean path's body limit (a LeanError("ReadError")), worded as BodyTooLarge.
            return Failure(FailureReason.BODY_TOO_LARGE)
        if name == "RemoteProtocolError" and _NO_RESPONSE in str(exc):
            return Failure(FailureReason.NO_REPLY, Phase.WAIT)
        if reason is FailureReason.NO_REPLY and phase is Phase.RECEIVE:
            # The reply had begun: it was cut short, which is a malformed reply.
            return Failure(FailureReason.PROTOCOL, Phase.RECEIVE)
        if reason is FailureReason.CONNECT_ERROR and phase is Phase.TLS:
            return Failure(FailureReason.TLS_HANDSHAKE)
        return Failure(reason, usual)
    return None


def classify(exc: BaseException, phase: Phase | None = None) -> Failure:
    """The :class:`Failure` an exception from a probe's transport means.

    ``phase`` is where the probe was (by default, the phase last entered in this task). The most
    specific cause inside ``exc`` wins (an ``ssl.SSLCertVerificationError`` under httpx's
    ``ConnectError`` is ``tls_verify``, a ``ConnectionRefusedError`` under trio's "all attempts to
    connect failed" is ``connect_refused``); then the exception's own class (or ``kind``) name,
    httpx's vocabulary (``ConnectError``, ``WriteError``, ``ReadError``,
    ``RemoteProtocolError``...); then ``other`` in ``phase``. An exception with a ``failure``
    attribute holding a :class:`Failure` (a transport's own typed error) is taken at its word.
    """
    where = current_phase() if phase is None else phase
    for inner in _chain(exc):
        # The hook for a transport with typed errors: an exception that knows its failure.
        known = getattr(inner, "failure", None)
        if isinstance(known, Failure):
            return known
    for inner in _chain(exc):
        failure = _from_leaf(inner, where)
        if failure is not None:
            return failure
    for inner in _chain(exc):
        failure = _from_name(inner, where)
        if failure is not None:
            return failure
    if isinstance(exc, OSError) or type(exc).__name__ in _BROKEN:
        # A connection that broke: what that means depends on where the probe was.
        reason = _BROKEN_IN.get(where)
        if reason is not None:
            return Failure(reason, where)
    return Failure(FailureReason.OTHER, where)


# Trio's names for a stream that broke or was closed under the probe (wrapping the OS error).
_BROKEN = frozenset({"BrokenResourceError", "ClosedResourceError"})
_BROKEN_IN = {
    Phase.CONNECT: FailureReason.CONNECT_ERROR,
    Phase.SEND: FailureReason.SEND,
    Phase.WAIT: FailureReason.NO_REPLY,
    Phase.RECEIVE: FailureReason.PROTOCOL,  # the reply was cut short
}


# The socket probe types' ``errors{cause}`` keys (tcp, grpc) -> the reason each means.
_CAUSES: dict[str, FailureReason] = {
    "refused": FailureReason.CONNECT_REFUSED,
    "dns": FailureReason.DNS,
    "tls": FailureReason.TLS_HANDSHAKE,
    "closed": FailureReason.NO_REPLY,
    "protocol": FailureReason.PROTOCOL,
    "grpc_status": FailureReason.HTTP_STATUS,
    "not_serving": FailureReason.HTTP_STATUS,
    "other": FailureReason.OTHER,
}


def from_cause(
    cause: str, phase: Phase, exc: BaseException | None = None, *, validator: str = "expect"
) -> Failure:
    """The failure of a probe type that counts ``errors{cause}`` (tcp, grpc), so the two agree.

    ``cause`` is the type's own bounded key; ``exc``, when the failure was an exception, refines
    it (``tls`` becomes ``tls_verify`` or ``tls_expired``, a connect error its errno's reason).
    ``timeout`` is blamed on ``phase``; ``mismatch`` (a reply that did not match) is a
    ``validation`` by ``validator``.
    """
    if cause == "timeout":
        return timed_out(phase)
    if cause == "mismatch":
        return Failure(FailureReason.VALIDATION, Phase.VALIDATE, validator=validator)
    if exc is not None:
        return classify(exc, phase)
    reason = _CAUSES.get(cause, FailureReason.OTHER)
    return Failure(reason, DEFAULT_PHASE.get(reason, phase))
