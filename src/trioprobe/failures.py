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

The classifiers (:func:`classify_exception`, :func:`classify_os_error`, ...) turn the exceptions
the transports raise into a :class:`Failure`; a transport with typed errors of its own can call
them with those, or build a :class:`Failure` directly.
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

__all__ = [
    "Failure",
    "FailureReason",
    "Phase",
    "PhaseTracker",
    "current_phase",
    "enter_phase",
    "track_phases",
    "timed_out",
]


class FailureReason(enum.StrEnum):
    """Why a probe failed. docs/metrics.md lists which probe types can produce each value."""

    #: The name did not resolve (NXDOMAIN, no address, resolver failure).
    DNS = "dns"
    #: The peer answered the connect with a reset: nothing listens on that port.
    CONNECT_REFUSED = "connect_refused"
    #: The connect got no answer before the deadline (a firewall drops it, a full backlog).
    CONNECT_TIMEOUT = "connect_timeout"
    #: The connect failed another way (no route, address not available, reset during connect).
    CONNECT_ERROR = "connect_error"
    #: The TLS handshake failed for a reason other than the certificate (protocol, alert).
    TLS_HANDSHAKE = "tls_handshake"
    #: The peer's certificate is not trusted (unknown CA, self-signed, wrong host name).
    TLS_VERIFY = "tls_verify"
    #: The peer's certificate has expired (or is not yet valid).
    TLS_EXPIRED = "tls_expired"
    #: Sending the request failed (the connection broke while writing).
    SEND = "send"
    #: The deadline ran out; :attr:`Failure.phase` says in which phase.
    TIMEOUT = "timeout"
    #: The reply's status (HTTP status, gRPC status, DNS rcode) is not an accepted one.
    HTTP_STATUS = "http_status"
    #: A validator rejected the reply; :attr:`Failure.validator` names it.
    VALIDATION = "validation"
    #: The reply was malformed (not HTTP, a truncated frame, a wrong answer format).
    PROTOCOL = "protocol"
    #: The reply's body was larger than the probe accepts.
    BODY_TOO_LARGE = "body_too_large"
    #: An ICMP error said the destination (host, port, network) is unreachable.
    UNREACHABLE = "unreachable"
    #: Nothing came back (a ping or a UDP datagram without an answer, a connection closed before
    #: a reply).
    NO_REPLY = "no_reply"
    #: An external program or a script step failed (non-zero exit, a failing step).
    PROGRAM_FAILED = "program_failed"
    #: The prober itself ran out of a resource (file descriptors: EMFILE/ENFILE, memory), so
    #: the target was not really tried: alert on the prober, not on the target.
    RESOURCE = "resource"
    #: Anything not above (the probe's ``error`` text says what).
    OTHER = "other"


class Phase(enum.StrEnum):
    """The step of a probe a failure happened in (the second label of the failure metric)."""

    #: Resolving the target's name.
    DNS = "dns"
    #: Opening the connection (TCP connect, a socket for a ping).
    CONNECT = "connect"
    #: The TLS handshake.
    TLS = "tls"
    #: Sending the request.
    SEND = "send"
    #: Waiting for the reply to begin (the peer's processing time).
    WAIT = "wait"
    #: Reading the reply (headers, body, frames).
    RECEIVE = "receive"
    #: Checking the reply (status, validators).
    VALIDATE = "validate"
    #: Running a program or a script's steps.
    RUN = "run"
    #: No phase was recorded (a probe type that does not track its phases).
    UNKNOWN = "unknown"


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

    reason: FailureReason = attrs.field(converter=FailureReason)
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


@attrs.define
class PhaseTracker:
    """Where the probe running in this task is, so a deadline can say what it interrupted.

    The scheduler makes one per probe and installs it with :func:`track_phases`; the probe
    reports its steps with :func:`enter_phase`. A mutable cell, not a context variable set per
    step, because the scheduler reads it *after* the probe was cancelled, from outside the
    probe's frames.
    """

    phase: Phase = Phase.UNKNOWN


_TRACKER: contextvars.ContextVar[PhaseTracker | None] = contextvars.ContextVar(
    "trioprobe_phase_tracker", default=None
)


@contextmanager
def track_phases() -> Iterator[PhaseTracker]:
    """Install a fresh :class:`PhaseTracker` for the code run inside (in this task)."""
    tracker = PhaseTracker()
    token = _TRACKER.set(tracker)
    try:
        yield tracker
    finally:
        _TRACKER.reset(token)


def enter_phase(phase: Phase) -> None:
    """Note that the probe in this task now does ``phase`` (nothing without a tracker).

    Costs a context variable lookup: cheap enough for every step of every probe.
    """
    tracker = _TRACKER.get()
    if tracker is not None:
        tracker.phase = phase


def current_phase() -> Phase:
    """The phase last entered in this task, or ``unknown``."""
    tracker = _TRACKER.get()
    return Phase.UNKNOWN if tracker is None else tracker.phase


def timed_out(phase: Phase | None = None) -> Failure:
    """A ``timeout`` in ``phase`` (by default, the phase last entered in this task)."""
    return Failure(FailureReason.TIMEOUT, phase if phase is not None else current_phase())
