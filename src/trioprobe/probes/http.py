"""The ``http`` probe type: GET each target URL every interval.

A probe succeeds when the status code is one of ``expected_codes`` (any 2xx when empty) and, if
``body_regex`` is set, the body matches it. The status code is kept as the ``resp-code`` map
metric (keyed by ``code``) so failures can be told apart on a dashboard; a body that fails the
regex counts in ``validation_failure`` (keyed by ``validator``), as cloudprober does.

**Transport.** Each target has its own ``httpx.AsyncClient`` (with its own keep-alive
connection), and all of them share one SSL context (:mod:`trioprobe._tls`), loaded in a worker
thread before the probe reports ready. With the context shared a client costs ~60 µs, and it is
built at the target's first tick, outside the probe's deadline. Per-target clients rather than one
shared pool: httpx's pool slows down sharply when many tasks share one client (httpx #3215), and a
hung target can then hold pool slots the others wait for; a client of its own keeps a hung target's
trouble its own. The deadline is the scheduler's cancel scope, not httpx's ``timeout=``, so it is
exact and testable under a mock clock.

**Phases.** Every probe traces its request (httpx's ``trace`` extension) and reports each phase
it went through as a Distribution extra in seconds: ``phase_connect`` (DNS + TCP) and
``phase_tls`` (only when it opened a connection), ``phase_send``, ``phase_ttfb`` (time to first
byte: server processing) and ``phase_transfer`` (reading the body); ``connections`` (a Map keyed
``state``) counts ``new`` and ``reused`` connections. For https targets the gauges
``tls_version`` (e.g. ``TLS 1.3``) and ``cert_expiry`` (the certificate's notAfter, seconds since
the epoch, when it was verified) report the target's current TLS connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs
import httpx
import trio

from .._httptrace import PHASES, RequestTrace, TLSInfo, release_response, tls_info
from .._tls import load_ssl_context, ssl_context
from .._urls import check_http_url
from ..metrics import Distribution, Map
from ..results import ProbeResult
from . import TargetsFn
from ._base import ClientPerTargetProbe, PerTargetClients

if TYPE_CHECKING:
    from ..config import ProbeSpec

__all__ = ["check_target", "PHASE_BUCKETS", "HTTPProbe", "Options", "make_probe"]

#: Buckets of the phase distributions, in seconds: 10 µs to about 5 s, doubling.
PHASE_BUCKETS = Distribution.exponential(base=2.0, scale=1e-5, count=20)


@attrs.frozen
class Options:
    """Config keys of an ``http`` probe."""

    method: str = "GET"
    #: Status codes that count as success; empty means any 2xx.
    expected_codes: tuple[int, ...] = ()
    #: If set, the body must match this regular expression (``re.search``).
    body_regex: str | None = attrs.field(default=None)
    headers: Mapping[str, str] = attrs.field(factory=dict)
    #: Verify TLS certificates.
    verify_tls: bool = True

    @body_regex.validator
    def _check_regex(self, _: object, value: str | None) -> None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"body_regex is not a valid regular expression: {exc}") from None


class HTTPProbe(ClientPerTargetProbe[httpx.AsyncClient]):
    """Probes each target URL with its own client; see the module docstring."""

    def __init__(
        self,
        options: Options,
        targets: TargetsFn,
        *,
        interval: float,
        timeout: float,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.options = options
        self.targets = targets
        self.interval = interval
        self.timeout = timeout
        self._pattern = re.compile(options.body_regex) if options.body_regex else None
        self._client_factory = client_factory
        make = client_factory or self._default_client
        self._clients = PerTargetClients[httpx.AsyncClient](
            lambda _target: make(), httpx.AsyncClient.aclose
        )
        self._tls: dict[str, TLSInfo] = {}

    def _default_client(self) -> httpx.AsyncClient:
        # timeout=None: the deadline is the probe's cancel scope. httpx's own default (5 s) would
        # otherwise end slow probes early, as a transport error instead of a counted timeout.
        # ssl_context() is ready (run() loaded it in a thread), so this costs tens of µs.
        return httpx.AsyncClient(
            verify=ssl_context(self.options.verify_tls),
            headers=dict(self.options.headers),
            timeout=None,
        )

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._client_factory is None:
            await load_ssl_context(self.options.verify_tls)
        await super().run(results, task_status=task_status)

    def _success_code(self, code: int) -> bool:
        if self.options.expected_codes:
            return code in self.options.expected_codes
        return 200 <= code < 300

    def _trace_extras(
        self, target: str, trace: RequestTrace, extras: dict[str, Map | Distribution]
    ) -> dict[str, int | float | str]:
        """Phase distributions and the connection count into ``extras``; the TLS gauges."""
        for phase, seconds in trace.phases().items():
            dist = _PHASE_TEMPLATES[phase].clone()
            dist.add_sample(seconds)
            extras[_PHASE_EXTRAS[phase]] = dist
        extras["connections"] = Map("state", {"new" if trace.new_connection else "reused": 1})
        if trace.ssl_object is not None:
            self._tls[target] = tls_info(trace.ssl_object)
        elif trace.new_connection:
            self._tls.pop(target, None)  # a new plain connection: no TLS to report
        info = self._tls.get(target)
        if info is None:
            return {}
        gauges: dict[str, int | float | str] = {"tls_version": info.version}
        if info.earliest_expiry is not None:
            gauges["cert_expiry"] = info.earliest_expiry
        return gauges

    async def probe_once(self, target: str) -> ProbeResult:
        client = self._clients.get(target)
        codes = Map("code")
        extras: dict[str, Map | Distribution] = {"resp-code": codes}
        if self._pattern is not None:
            extras["validation_failure"] = Map("validator", {"regex": 0})
        trace = RequestTrace()
        started = trio.current_time()
        try:
            response = await client.request(
                self.options.method, target, extensions={"trace": trace}
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # InvalidURL is not an HTTPError: without it, one malformed line in a targets file
            # would end the probe and the run instead of failing that target.
            latency = trio.current_time() - started
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return ProbeResult(target, False, latency, error=error, extras=extras)
        latency = trio.current_time() - started
        release_response(response)
        gauges = self._trace_extras(target, trace, extras)
        codes.increment(str(response.status_code))
        if not self._success_code(response.status_code):
            error = f"unexpected status {response.status_code} {response.reason_phrase}".rstrip()
            return ProbeResult(target, False, latency, error=error, extras=extras, gauges=gauges)
        if self._pattern is not None and not self._pattern.search(response.text):
            extras["validation_failure"] = Map("validator", {"regex": 1})
            error = f"body did not match /{self._pattern.pattern}/"
            return ProbeResult(target, False, latency, error=error, extras=extras, gauges=gauges)
        return ProbeResult(target, True, latency, extras=extras, gauges=gauges)


_PHASE_EXTRAS = {phase: f"phase_{phase}" for phase in PHASES}
_PHASE_TEMPLATES = {phase: PHASE_BUCKETS.clone() for phase in PHASES}


#: Raises ``ValueError`` for a target that is not an ``http(s)://host`` URL; the config check and
#: targets files use it to reject bad targets where they are written.
check_target = check_http_url


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> HTTPProbe:
    return HTTPProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
