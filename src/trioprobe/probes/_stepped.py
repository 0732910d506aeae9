"""What the probe types that walk a fresh connection step by step share (tcp, grpc).

Each probe connects, maybe shakes hands over TLS, then talks; a failure or a timeout is
reported with the step it happened in, its cause (a fixed key set, see :func:`error_causes`),
its reason and phase (:mod:`trioprobe.failures`), and the time each finished step took. The
probe keeps its own deadline so that a timeout still reports its step: the scheduler's cancel
scope ends :data:`BACKSTOP` later (when two scopes are cancelled, Trio's ``Cancelled`` is caught
by the outer one, which would lose the result).
"""

from __future__ import annotations

import ssl
from typing import TypeVar

import attrs
import trio

from .._tcp import open_tcp_stream
from .._urls import host_name_problem
from ..failures import Phase, from_cause
from ..metrics import Distribution, Map
from ..results import ProbeResult
from ._base import ScheduledProbe
from ._net import (
    BACKSTOP,
    TargetError,
    describe_error,
    error_cause,
    error_causes,
    split_host_port,
    step_time,
)

__all__ = ["StepFailure", "Steps", "SteppedProbe", "connect"]

OptionsT = TypeVar("OptionsT")

#: What a connection's steps raise when the target or the network fails them.
_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, ssl.SSLError, UnicodeError)


@attrs.frozen
class StepFailure:
    cause: str
    message: str
    #: The exception behind it, if any: it refines the reason (see failures.from_cause).
    exc: BaseException | None = None


@attrs.define
class Steps:
    """What one probe got through so far: reported even when it fails or times out."""

    step: str = "connect"
    #: The failure phase ``step`` is in (trioprobe.failures).
    phase: Phase = Phase.CONNECT
    #: Seconds per finished step (``connect_latency``, ``tls_handshake_duration``, ...).
    timings: dict[str, float] = attrs.field(factory=dict)
    gauges: dict[str, int] = attrs.field(factory=dict)


class SteppedProbe(ScheduledProbe[OptionsT]):
    """A :class:`ScheduledProbe` whose ``probe_once`` walks :meth:`_walk` under its own deadline.

    A subclass sets ``causes`` (its ``errors`` Map's keys), defines ``_walk(target, steps)``
    (returns a :class:`StepFailure` or None; raises what the network raises) and, for TLS,
    ``_wants_tls`` and ``_ssl_context``. ``_new_steps`` and ``_extras`` let a type keep more
    per probe (grpc's status) and export it.
    """

    # The probe keeps its own deadline (see probe_once); the scheduler's is a backstop.
    backstop = BACKSTOP
    causes: tuple[str, ...] = ()
    _ssl: ssl.SSLContext | None = None

    def _wants_tls(self) -> bool:
        return False

    def _ssl_context(self) -> ssl.SSLContext:
        raise NotImplementedError

    async def _prepare_tls(self) -> None:
        # A probe's own context (a CA file, ALPN) loads and parses certificates: done once, in a
        # thread, before the probe reports ready.
        self._ssl = await trio.to_thread.run_sync(self._ssl_context)

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._wants_tls() and self._ssl is None:
            await self._prepare_tls()
        await super().run(results, task_status=task_status)

    def _new_steps(self) -> Steps:
        return Steps()

    async def _walk(self, target: str, steps: Steps) -> StepFailure | None:
        raise NotImplementedError

    def _extras(self, steps: Steps) -> dict[str, Distribution | Map]:
        return {}

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        steps = self._new_steps()
        failure: StepFailure | None = None
        with trio.move_on_at(started + self.timeout) as deadline:
            try:
                failure = await self._walk(target, steps)
            except TargetError as exc:
                failure = StepFailure("other", str(exc))
            except _NETWORK_ERRORS as exc:
                failure = StepFailure(error_cause(exc), f"{steps.step}: {describe_error(exc)}", exc)
        latency = trio.current_time() - started
        if deadline.cancelled_caught:
            failure = StepFailure("timeout", f"{steps.step}: timed out after {self.timeout:g}s")
        return self._result(target, latency, steps, failure)

    def _result(
        self, target: str, latency: float, steps: Steps, failure: StepFailure | None
    ) -> ProbeResult:
        # Each step's time as a one-bucket histogram (``_sum`` and ``_count``): a plain sum,
        # exported as a ``_seconds_total`` counter, could not be divided by anything.
        extras: dict[str, Distribution | Map] = {
            name: step_time(seconds) for name, seconds in steps.timings.items()
        }
        extras["errors"] = error_causes(self.causes, failure.cause if failure else None)
        extras.update(self._extras(steps))
        if failure is None:
            return ProbeResult(target, True, latency, extras=extras, gauges=steps.gauges)
        return ProbeResult(
            target,
            False,
            latency,
            error=failure.message,
            timeout=failure.cause == "timeout",
            extras=extras,
            gauges=steps.gauges,
            failure=from_cause(failure.cause, steps.phase, failure.exc),
        )


async def connect(
    target: str, default_port: int | None, steps: Steps
) -> tuple[str, trio.SocketStream] | StepFailure:
    """The host and a TCP connection to ``target`` (its time in ``steps.timings``'s
    ``connect_latency``), or the failure of a host name no resolver could answer."""
    host, port = split_host_port(target, default_port)
    problem = host_name_problem(host)
    if problem is not None:
        return StepFailure("dns", problem)
    started = trio.current_time()
    stream = await open_tcp_stream(host, port)
    steps.timings["connect_latency"] = trio.current_time() - started
    return host, stream
