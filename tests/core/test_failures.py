"""The failure vocabulary: defaults, the phase tracker, and how a ProbeResult carries it."""

from __future__ import annotations

import trio

from trioprobe import Failure, FailureReason, Phase, ProbeResult
from trioprobe.failures import enter_phase, timed_out, track_phases
from trioprobe.probes._base import run_per_target


def test_reason_values_are_the_documented_labels() -> None:
    assert [r.value for r in FailureReason] == [
        "dns",
        "connect_refused",
        "connect_timeout",
        "connect_error",
        "tls_handshake",
        "tls_verify",
        "tls_expired",
        "send",
        "timeout",
        "http_status",
        "validation",
        "protocol",
        "body_too_large",
        "unreachable",
        "no_reply",
        "program_failed",
        "resource",
        "other",
    ]


def test_failure_phase_defaults_and_labels() -> None:
    assert Failure(FailureReason.CONNECT_REFUSED).phase is Phase.CONNECT
    assert Failure("tls_expired").phase is Phase.TLS
    assert Failure(FailureReason.TIMEOUT).phase is Phase.UNKNOWN
    with track_phases() as tracker:
        enter_phase(Phase.RECEIVE)
        assert tracker.phase is Phase.RECEIVE
        assert timed_out().label == "timeout (receive)"
        assert Failure(FailureReason.OTHER).phase is Phase.RECEIVE
    validation = Failure(FailureReason.VALIDATION, validator="regex")
    assert validation.label == "validation (regex)"
    assert validation.as_dict() == {
        "reason": "validation",
        "phase": "validate",
        "validator": "regex",
    }
    assert Failure(FailureReason.DNS).label == "dns"


def test_result_always_has_a_reason_when_failed_and_none_when_succeeded() -> None:
    assert ProbeResult("a", True, failure=Failure(FailureReason.DNS)).failure is None
    assert ProbeResult("a", False).reason is FailureReason.OTHER
    assert ProbeResult("a", False, timeout=True).reason is FailureReason.TIMEOUT
    # A timeout failure sets the timeout flag, so timeouts_total and failures agree.
    assert ProbeResult("a", False, failure=timed_out(Phase.CONNECT)).timeout


async def test_the_scheduler_blames_a_timeout_on_the_phase_last_entered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def probe_once(target: str) -> ProbeResult:
        enter_phase(Phase.TLS)
        await trio.sleep_forever()
        raise AssertionError("not reached")

    send, receive = trio.open_memory_channel[ProbeResult](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_per_target(
                lambda: ["t"],
                interval=10.0,
                probe_timeout=1.0,
                probe_once=probe_once,
                results=send,
                task_status=task_status,
            )
        )
        result = await receive.receive()
        nursery.cancel_scope.cancel()
    assert result.failure == Failure(FailureReason.TIMEOUT, Phase.TLS)
    assert result.timeout
