"""The failure vocabulary's leaf: the two enums and the phase tracker, importing nothing of
trioprobe's own, so transports (``_httptrace``, ``_lean_http``) and the standalone
``trioprobe.probing`` can report phases without loading the rest. :mod:`trioprobe.failures`
re-exports these names and documents how they are used.
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

__all__ = [
    "FailureReason",
    "Phase",
    "PhaseTracker",
    "current_phase",
    "enter_phase",
    "track_phases",
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


@attrs.define
class PhaseTracker:
    """Where the probe running in this task is, so a deadline can say what it interrupted.

    The scheduler makes one per probe and installs it with :func:`track_phases`; the probe
    reports its steps with :func:`enter_phase`. A mutable cell, not a context variable set per
    step, because the scheduler reads it *after* the probe was cancelled, from outside the
    probe's frames.
    """

    phase: Phase = Phase.UNKNOWN
    #: What running out of time in this phase means, when not just ``timeout`` (a probe waiting
    #: for an echo that never comes: ``no_reply``).
    on_timeout: FailureReason | None = None


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


def enter_phase(phase: Phase, *, on_timeout: FailureReason | None = None) -> None:
    """Note that the probe in this task now does ``phase`` (nothing without a tracker), and
    what a deadline running out in it means (``timeout`` unless ``on_timeout`` says otherwise).

    Costs a context variable lookup: cheap enough for every step of every probe.
    """
    tracker = _TRACKER.get()
    if tracker is not None:
        tracker.phase = phase
        tracker.on_timeout = on_timeout


def current_phase() -> Phase:
    """The phase last entered in this task, or ``unknown``."""
    tracker = _TRACKER.get()
    return Phase.UNKNOWN if tracker is None else tracker.phase
