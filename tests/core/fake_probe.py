"""A probe type for runner tests, registered as ``fake`` with ``probe_types.registered``.

It probes nothing: every target "succeeds" after ``latency`` seconds (of the mock clock), and it
can be told to fail, to test that a probe's error propagates out of the runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from trioprobe.probes import TargetsFn
from trioprobe.probes._base import run_per_target
from trioprobe.results import ProbeResult

if TYPE_CHECKING:
    from trioprobe.specs import ProbeSpec


@attrs.frozen
class Options:
    latency: float = 0.001
    #: Raise from a probe this many seconds after the probe started.
    fail_at: float | None = None


class FakeProbe:
    def __init__(self, spec: ProbeSpec, options: Options, targets: TargetsFn) -> None:
        self.spec = spec
        self.options = options
        self.targets = targets
        #: Results produced, per target.
        self.sent: dict[str, int] = {}

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        start = trio.current_time()

        async def probe_once(target: str) -> ProbeResult:
            fail_at = self.options.fail_at
            if fail_at is not None and trio.current_time() - start >= fail_at:
                raise RuntimeError(f"fake probe of {target} failed on purpose")
            await trio.sleep(self.options.latency)
            self.sent[target] = self.sent.get(target, 0) + 1
            return ProbeResult(target, True, self.options.latency)

        await run_per_target(
            self.targets,
            interval=self.spec.interval,
            probe_timeout=self.spec.timeout,
            probe_once=probe_once,
            results=results,
            task_status=task_status,
        )


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> FakeProbe:
    return FakeProbe(spec, options, targets)
