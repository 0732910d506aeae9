"""The ``file_age`` probe type: each target is a file that must have changed recently.

A backup, a cron job's stamp file, a replica's last-applied marker: when the file has not been
modified for more than ``max_age`` seconds (or is missing), the probe fails. The latency is the
time the ``stat`` took; the file's age is exported as the gauge ``age_seconds``::

    [[probe]]
    name = "nightly-backup"
    type = "file_age"
    targets = ["/var/backups/db.dump"]
    interval = 60
    max_age = 90000          # 25 hours
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import attrs
import trio

from trioprobe.metrics import Float, Kind
from trioprobe.probes import ScheduledProbe, TargetsFn
from trioprobe.results import ProbeResult

if TYPE_CHECKING:
    from trioprobe.specs import ProbeSpec

__all__ = ["EXPORTS", "FileAgeProbe", "Options", "check_target", "make_probe"]


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 seconds, got {value}")


@attrs.frozen
class Options:
    """The config keys of a ``file_age`` probe, beside the common ones."""

    #: Seconds since the last modification above which the probe fails.
    max_age: float = attrs.field(default=300.0, validator=_positive)


#: What this type exports beside every probe's metrics, so `trioprobe check` can warn when
#: another probe exports ``age_seconds`` with a different type.
EXPORTS = {"age_seconds": (Float(), Kind.GAUGE)}


def check_target(target: str) -> None:
    """Relative paths would depend on the directory trioprobe was started from: refuse them."""
    if not os.path.isabs(target):
        raise ValueError("expected an absolute path")


class FileAgeProbe(ScheduledProbe[Options]):
    """Stats every target once per interval (in a worker thread: a stat can block).

    ``ScheduledProbe`` runs ``probe_once`` for each target on the shared schedule, each under the
    probe's ``timeout``, and follows the target list as it changes.
    """

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        try:
            stat = await trio.Path(target).stat()
        except OSError as exc:
            return ProbeResult(target, False, error=f"cannot stat: {exc.strerror or exc}")
        latency = trio.current_time() - started
        age = max(0.0, time.time() - stat.st_mtime)
        gauges = {"age_seconds": age}
        if age > self.options.max_age:
            error = f"last modified {age:.0f}s ago, more than max_age {self.options.max_age:g}s"
            return ProbeResult(target, False, latency, error=error, gauges=gauges)
        return ProbeResult(target, True, latency, gauges=gauges)


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> FileAgeProbe:
    """The plugin API's one required function: build the probe the runner will run."""
    return FileAgeProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
