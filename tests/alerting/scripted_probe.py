"""A probe type for alerting tests, registered as ``scripted``: outcomes set by the test.

``OUTCOMES[target]`` is what the next probe of ``target`` returns: ``True`` (success, latency
``LATENCY.get(target, 0.001)`` seconds of the mock clock) or ``False`` (a failure, reason
``http_status``). Unlisted
targets succeed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import trio

from trioprobe.failures import Failure, FailureReason
from trioprobe.probes import TargetsFn
from trioprobe.probes._base import run_per_target
from trioprobe.results import ProbeResult

if TYPE_CHECKING:
    from trioprobe.specs import ProbeSpec

OUTCOMES: dict[str, bool] = {}
#: The reason every scripted failure carries (as a wrong status would).
SCRIPTED_FAILURE = Failure(FailureReason.HTTP_STATUS)
LATENCY: dict[str, float] = {}


def fast_config(alert: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A config: probe ``p`` of target ``x`` every 20 ms (real time), watched by ``alert``."""
    probe = {
        "name": "p",
        "type": "scripted",
        "targets": ["x"],
        "interval": 0.02,
        "timeout": 0.5,
        "stats_interval": 1.0,
    }
    return {"probe": [probe], "alert": [alert], **top}


@attrs.frozen
class Options:
    pass


class ScriptedProbe:
    def __init__(self, spec: ProbeSpec, targets: TargetsFn) -> None:
        self.spec = spec
        self.targets = targets

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def probe_once(target: str) -> ProbeResult:
            latency = LATENCY.get(target, 0.001)
            await trio.sleep(latency)
            if OUTCOMES.get(target, True):
                return ProbeResult(target, True, latency)
            error = f"{target} is down (scripted)"
            return ProbeResult(target, False, latency, error=error, failure=SCRIPTED_FAILURE)

        await run_per_target(
            self.targets,
            interval=self.spec.interval,
            probe_timeout=self.spec.timeout,
            probe_once=probe_once,
            results=results,
            task_status=task_status,
        )


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> ScriptedProbe:
    return ScriptedProbe(spec, targets)
