"""The ``script`` probe type: a check written in Python (:mod:`trioprobe.checks`), on an interval.

``module`` names the check's code: a ``.py`` file (relative to the config file) or a dotted
module name; ``function`` (default ``check``) is ``async def check(ctx, target)``. The module is
imported when the probe is built (at start and on reload), so an import error is a config error
naming the file and line.

Each run gets a fresh ``httpx.AsyncClient`` (cookies do not leak from one run, or one target, to
the next, as a real user's session would not) with the probe's ``headers``, bearer token and TLS
settings, and runs under the probe's ``timeout``. A result exports, beside the common metrics:

* ``step_duration`` (gauge, seconds, label ``step``): each step of the last run;
* ``step_failures`` (counter, label ``step``): runs that failed in that step;
* ``errors`` (counter, label ``cause``): failed runs by reason (a fixed set);
* ``loop_blocked``: runs that held the event loop longer than ``block_warning`` in one stretch
  (a synchronous ``requests.get`` or ``time.sleep``), each also named in a warning;
* ``check_<name>`` (gauge): every value the check set with ``ctx.metric(name, value)``.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from .._options import module_field, path_field
from .._scrub import register_secret, secret_forms
from .._tls import client_context
from ..checks import CheckFn, CheckReport, load_check, new_http_client, run_check
from ..failures import Failure, FailureReason, Phase
from ..metrics import Map
from ..results import ProbeResult
from . import TargetsFn
from ._net import BACKSTOP, ScheduledProbe, at_least, error_causes

if TYPE_CHECKING:
    import httpx

    from ..specs import ProbeSpec

__all__ = ["CAUSES", "MAX_STEPS", "Options", "ScriptProbe", "make_probe"]

logger = logging.getLogger("trioprobe.probes.script")

#: Failure reasons of a check (:func:`trioprobe.checks.classify`), the ``errors`` map's keys.
CAUSES = (
    "timeout",
    "validation",
    "http_status",
    "connect_refused",
    "connect_error",
    "dns",
    "tls_handshake",
    "protocol",
    "other",
)
#: Distinct step names kept per probe; later ones are counted as ``other``, so a check that
#: names steps after data cannot grow the series without bound.
MAX_STEPS = 32
#: Seconds between two warnings about one probe's check blocking the loop.
_WARN_EVERY = 60.0


@attrs.frozen
class Options:
    """Config keys of a ``script`` probe."""

    #: The check's code: a ``.py`` file (relative to the config file) or a dotted module name.
    module: str = module_field("")
    #: The async function in ``module`` to run as ``await function(ctx, target)``.
    function: str = "check"
    #: Headers on every request of ``ctx.http``.
    headers: Mapping[str, str] = attrs.field(factory=dict)
    #: Verify servers' certificates in ``ctx.http``.
    verify_tls: bool = True
    #: CA bundle (PEM) for ``ctx.http`` instead of the system's.
    ca_file: str = path_field("")
    #: Send ``Authorization: Bearer <token>``, the token read from this environment variable...
    bearer_token_env: str = ""
    #: ...or from this file (first line), once at start.
    bearer_token_file: str = path_field("")
    #: Follow redirects in ``ctx.http`` (a login usually answers with one).
    follow_redirects: bool = True
    #: Seconds a check may run without a checkpoint before it is named in a warning.
    block_warning: float = attrs.field(default=0.05, validator=at_least(0.001))


def _token(options: Options) -> str | None:
    if options.bearer_token_env:
        token = os.environ.get(options.bearer_token_env)
        if not token:
            raise ValueError(f"bearer_token_env: ${options.bearer_token_env} is not set")
        return token.strip()
    if options.bearer_token_file:
        try:
            with open(options.bearer_token_file, encoding="utf-8") as file:
                return file.readline(4096).strip()
        except OSError as exc:
            raise ValueError(f"bearer_token_file: {exc}") from None
    return None


def client_headers(options: Options) -> dict[str, str]:
    """The headers ``ctx.http`` sends: ``headers`` plus the bearer token, if configured."""
    headers = dict(options.headers)
    token = _token(options)
    if token:
        # A target that echoes the request would otherwise put the token in an error message.
        register_secret(secret_forms(token))
        headers["Authorization"] = f"Bearer {token}"
    return headers


class ScriptProbe(ScheduledProbe[Options]):
    """Runs a Python check against each target once per interval."""

    # run_check keeps the probe's own deadline (to report the step it ran out in).
    backstop = BACKSTOP

    def __init__(
        self,
        options: Options,
        targets: TargetsFn,
        check: CheckFn,
        *,
        interval: float,
        timeout: float,
        name: str = "script",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        self.check = check
        self.name = name
        self._headers = dict(headers if headers is not None else options.headers)
        self._verify: ssl.SSLContext | None = None
        self._steps: set[str] = set()
        self._last_warning = -float("inf")

    def _ssl_context(self) -> ssl.SSLContext:
        # CA certificates are read and parsed: once, in a thread, before the probe is ready.
        return client_context(ca_file=self.options.ca_file, verify=self.options.verify_tls)

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._verify is None:
            # Loading CA certificates takes tens of ms: once, in a thread, before ready.
            self._verify = await trio.to_thread.run_sync(self._ssl_context)
        await super().run(results, task_status=task_status)

    def _client(self) -> httpx.AsyncClient:
        return new_http_client(
            headers=self._headers,
            verify=self._verify if self._verify is not None else True,
            follow_redirects=self.options.follow_redirects,
            timeout=self.timeout,
        )

    async def probe_once(self, target: str) -> ProbeResult:
        async with self._client() as http:
            report = await run_check(
                self.check, target, http=http, time_limit=self.timeout, name=self.name
            )
        blocked = report.longest_block > self.options.block_warning
        if blocked:
            self._warn_blocking(report)
        return self._result(report, blocked)

    def _result(self, report: CheckReport, blocked: bool) -> ProbeResult:
        extras: dict[str, int | float | Map] = {
            "errors": error_causes(CAUSES, _known(report.reason) if report.reason else None),
            "loop_blocked": int(blocked),
        }
        failed = Map("step")
        if report.failed_step is not None:
            failed.increment(self._step_key(report.failed_step))
        extras["step_failures"] = failed
        durations = Map("step")
        for step in report.steps:
            durations.values[self._step_key(step.name)] = step.seconds
        gauges: dict[str, int | float | str | Map] = {
            f"check_{name}": value for name, value in report.metrics.items()
        }
        if durations.values:
            gauges["step_duration"] = Map("step", durations.values)
        return ProbeResult(
            report.target,
            report.success,
            report.duration,
            error=report.message,
            timeout=report.reason == "timeout",
            extras=extras,
            gauges=gauges,
            failure=None if report.success else self._failure(report),
        )

    def _failure(self, report: CheckReport) -> Failure:
        """The check's reason as a :class:`Failure`: a reason outside the enum (a
        ``CheckFailed(reason=...)`` of the check's own) is ``other``; a ``validation`` is the
        failed step's (or ``check``'s); a timeout or ``other`` happened while the check ran."""
        try:
            reason = FailureReason(report.reason or "other")
        except ValueError:
            reason = FailureReason.OTHER
        if reason is FailureReason.VALIDATION:
            step = report.failed_step
            return Failure(reason, validator=self._step_key(step) if step else "check")
        if reason in (FailureReason.TIMEOUT, FailureReason.OTHER):
            return Failure(reason, Phase.RUN)
        return Failure(reason)

    def _step_key(self, name: str) -> str:
        if name in self._steps:
            return name
        if len(self._steps) < MAX_STEPS:
            self._steps.add(name)
            return name
        return "other"

    def _warn_blocking(self, report: CheckReport) -> None:
        now = trio.current_time()
        if now - self._last_warning < _WARN_EVERY:
            return
        self._last_warning = now
        logger.warning(
            "probe %r: check %s held the event loop for %.0f ms without a checkpoint (target "
            "%s): a blocking call such as requests.get or time.sleep? Use ctx.http and "
            "await trio.sleep; every probe's latency in this process is inflated meanwhile",
            self.name,
            getattr(self.check, "__qualname__", self.check),
            report.longest_block * 1000,
            report.target,
        )


def _known(reason: str) -> str:
    # errors{cause} keeps its fixed keys; failures_total{reason, phase} has the precise reason.
    reason = _FOLDED.get(reason, reason)
    return reason if reason in CAUSES else "other"


# Reasons the check classifier gives that errors{cause} counted under an older, coarser key.
_FOLDED = {
    "tls_verify": "tls_handshake",
    "tls_expired": "tls_handshake",
    "connect_timeout": "connect_error",
    "unreachable": "connect_error",
    "no_reply": "protocol",
    "body_too_large": "protocol",
}


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> ScriptProbe:
    if not options.module:
        raise ValueError("module: a script probe needs the check's module (a .py file or name)")
    try:
        check = load_check(options.module, options.function)
    except ValueError as exc:
        raise ValueError(f"module: {exc}") from None
    return ScriptProbe(
        options,
        targets,
        check,
        interval=spec.interval,
        timeout=spec.timeout,
        name=spec.name,
        headers=client_headers(options),
    )
