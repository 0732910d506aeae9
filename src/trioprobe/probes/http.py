"""The ``http`` probe type: GET each target URL every interval.

A probe succeeds when the status code is one of ``expected_codes`` (any 2xx when empty) and, if
``body_regex`` is set, the body matches it. The status code is kept as the ``resp-code`` map
metric (keyed by ``code``) so failures can be told apart on a dashboard; a body that fails the
regex counts in ``validation_failure`` (keyed by ``validator``), as cloudprober does.

Each target has its own ``httpx.AsyncClient``: httpx's connection pool slows down sharply when
many tasks share one client, and building a client costs tens of milliseconds, so clients are made
once per target, never per probe. The deadline is the scheduler's cancel scope, not httpx's
``timeout=``, so it is exact and testable under a mock clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs
import httpx
import trio

from ..metrics import Map
from ..results import ProbeResult
from . import TargetsFn
from ._base import ClientPerTargetProbe, PerTargetClients

if TYPE_CHECKING:
    from ..config import ProbeSpec

__all__ = ["HTTPProbe", "Options", "make_probe"]


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
        make = client_factory or self._default_client
        self._clients = PerTargetClients[httpx.AsyncClient](
            lambda _target: make(), httpx.AsyncClient.aclose
        )

    def _default_client(self) -> httpx.AsyncClient:
        # timeout=None: the deadline is the probe's cancel scope. httpx's own default (5 s) would
        # otherwise end slow probes early, as a transport error instead of a counted timeout.
        return httpx.AsyncClient(
            verify=self.options.verify_tls, headers=dict(self.options.headers), timeout=None
        )

    def _success_code(self, code: int) -> bool:
        if self.options.expected_codes:
            return code in self.options.expected_codes
        return 200 <= code < 300

    async def probe_once(self, target: str) -> ProbeResult:
        client = self._clients.get(target)
        codes = Map("code")
        extras: dict[str, Map] = {"resp-code": codes}
        if self._pattern is not None:
            extras["validation_failure"] = Map("validator", {"regex": 0})
        started = trio.current_time()
        try:
            response = await client.request(self.options.method, target)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # InvalidURL is not an HTTPError: without it, one malformed line in a targets file
            # would end the probe and the run instead of failing that target.
            latency = trio.current_time() - started
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return ProbeResult(target, False, latency, error=error, extras=extras)
        latency = trio.current_time() - started
        codes.increment(str(response.status_code))
        if not self._success_code(response.status_code):
            error = f"unexpected status {response.status_code} {response.reason_phrase}".rstrip()
            return ProbeResult(target, False, latency, error=error, extras=extras)
        if self._pattern is not None and not self._pattern.search(response.text):
            extras["validation_failure"] = Map("validator", {"regex": 1})
            error = f"body did not match /{self._pattern.pattern}/"
            return ProbeResult(target, False, latency, error=error, extras=extras)
        return ProbeResult(target, True, latency, extras=extras)


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> HTTPProbe:
    return HTTPProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
