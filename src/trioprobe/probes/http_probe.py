"""The ``http`` probe type: request each target URL every interval.

A probe succeeds when the status code is one of ``expected_codes`` (any 2xx when empty) and
every configured validator passes: ``body_regex``, ``header_checks``, ``json_paths`` and
``json_subset`` (see :mod:`._http_checks`). The status code is kept as the ``resp-code`` map
metric (keyed by ``code``) so failures can be told apart on a dashboard; each validator that
fails counts in ``validation_failure`` (keyed by ``validator``: ``regex``, ``header``,
``json_path``, ``json_subset``), as cloudprober does.

**The request.** ``method``, ``headers`` and ``body`` (or ``body_file``) as configured; basic or
bearer auth from a secret in an environment variable or a file, read once when the probe is
built. A secret never appears in an error, the live table, ``check``'s output or a repr: the
Options hold only where it comes from, and any error text that contains it is redacted.
``host`` probes a backend by address: it becomes the ``Host`` header and, for https, the TLS
server name (SNI) and the name the certificate is verified against, while the connection goes
to the target's IP. With ``follow_redirects`` the probe follows up to ``max_redirects``
redirects itself, one request at a time (so each hop is traced and freed like the first), and
counts them in the ``redirects`` counter; without it a 3xx is the answer, checked against
``expected_codes``.

**Transport.** Each target has its own ``httpx.AsyncClient`` (with its own keep-alive
connection), and all of them share one SSL context (:mod:`trioprobe._tls`), loaded in a worker
thread before the probe reports ready. With the context shared a client costs ~60 µs, and it is
built at the target's first tick, outside the probe's deadline. Per-target clients rather than one
shared pool: httpx's pool slows down sharply when many tasks share one client (httpx #3215), and a
hung target can then hold pool slots the others wait for; a client of its own keeps a hung target's
trouble its own. The deadline is the scheduler's cancel scope, not httpx's ``timeout=``, so it is
exact and testable under a mock clock.

**Phases** (with ``detail = "full"``; the default ``basic`` leaves them and ``connections``
out: each phase histogram is 22 series per target). Every probe traces its request (httpx's
``trace`` extension) and reports each phase it went through as a Distribution extra in
seconds: ``phase_connect`` (DNS + TCP) and ``phase_tls`` (only when it opened a connection),
``phase_send``, ``phase_ttfb`` (time to first byte: server processing) and ``phase_transfer``
(reading the body); ``connections`` (a Map keyed ``state``) counts ``new`` and ``reused``
connections. For https targets the gauges ``tls_version`` (e.g. ``TLS 1.3``) and
``cert_expiry`` (the certificate's notAfter, seconds since
the epoch, when it was verified) report the target's current TLS connection.

**The lean path.** httpx's layers cost about 1.1 ms of CPU per probe. A plain ``http://`` target
is probed instead over one keep-alive connection of its own on a raw socket, the Prober's client
(:mod:`trioprobe._lean_http`: the request encoded once, a whole reply parsed by a regex, h11 for
any other shape), at a fraction of the CPU, reporting the same results, errors, phases
and ``connections`` counts. The httpx path is kept when the probe needs it: an ``https://`` target,
``follow_redirects``, a ``client_factory`` given by the caller, or ``transport = "httpx"``.

Each target's state is an :class:`~._http_targets.HttpxTarget` or an
:class:`~._http_targets.H11Target` (one class per transport, behind the ``HTTPTarget``
protocol); both return the transport-neutral :class:`~trioprobe._exchange.Exchange`, which the
validators (:class:`~._http_checks.ResponseChecks`) and the verdict read.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import httpcore  # noqa: F401 (imported here, not lazily by the first client mid-run)
import httpx
import trio

from .._exchange import Exchange
from .._http11 import HTTP11Error
from .._httpbody import ACCEPT_ENCODING, BodyTooLarge
from .._httptrace import PHASES
from .._tcp import break_connect_cycles
from .._tls import client_context, load_ssl_context, ssl_context
from .._urls import check_http_url
from ..failures import Failure, FailureReason, Phase, classify
from ..metrics import Distribution, Map
from ..results import ProbeResult
from . import TargetsFn
from ._base import ClientPerTargetProbe, PerTargetClients
from ._http_checks import (
    BlackboxMatchers,
    ResponseChecks,
    header_checks,
    parse_json_path,
)
from ._http_options import DETAILS, MAX_BODY_FILE_BYTES, TRANSPORTS, Options, RequestParts
from ._http_targets import (
    EXCHANGE_ERRORS,
    HTTPTarget,
    HttpxTarget,
    RequestSpec,
    TooManyRedirects,
    h11_target,
)

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = [
    "MAX_BODY_FILE_BYTES",
    "PHASE_BUCKETS",
    "DETAILS",
    "HTTPProbe",
    "Options",
    "TRANSPORTS",
    "RequestParts",
    "check_target",
    "make_probe",
]

#: Buckets of the phase distributions, in seconds: 10 µs to about 5 s, doubling.
PHASE_BUCKETS = Distribution.exponential(base=2.0, scale=1e-5, count=20)


class HTTPProbe(ClientPerTargetProbe[HTTPTarget]):
    """Probes each target URL with its own client; see the module docstring.

    Building it reads ``body_file`` and the auth secret (``ValueError`` naming the key if one
    cannot be read): small files, read once, before the probe runs.
    """

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
        self._parts = RequestParts.load(options)
        self._checks = ResponseChecks(
            re.compile(options.body_regex) if options.body_regex else None,
            header_checks(options.header_checks),
            tuple((parse_json_path(path), want) for path, want in options.json_paths.items()),
            dict(options.json_subset),
            BlackboxMatchers.compile(
                options.fail_if_body_matches,
                options.fail_if_body_not_matches,
                options.fail_if_header_matches,
                options.fail_if_header_not_matches,
            ),
        )
        self._validators = self._checks.names
        self._spec = RequestSpec(
            options.method,
            self._parts.body,
            options.max_body_bytes,
            options.follow_redirects,
            options.max_redirects,
        )
        self._client_factory = client_factory
        self._make_client = client_factory or self._default_client
        self._clients = PerTargetClients[HTTPTarget](self._new_target, _close_target)
        self._lean = (
            client_factory is None
            and options.transport == "auto"
            and not options.follow_redirects
            and not options.needs_httpx
        )
        self._ssl: ssl.SSLContext | None = None
        self._full = options.detail == "full"

    def _default_client(self) -> httpx.AsyncClient:
        # timeout=None: the deadline is the probe's cancel scope. httpx's own default (5 s) would
        # otherwise end slow probes early, as a transport error instead of a counted timeout.
        # ssl_context() is ready (run() loaded it in a thread), so this costs tens of µs.
        # Accept-Encoding: only what _httpbody decodes under its bound (httpx would add br/zstd
        # when their packages are installed); configured headers still override it.
        options = self.options
        verify = self._ssl or ssl_context(options.verify_tls)
        transport = None
        if options.ip_protocol or options.source_address:
            # Binding the local end picks the family: trio tries only the addresses of it.
            local = options.source_address or ("0.0.0.0" if options.ip_protocol == "ip4" else "::")
            transport = httpx.AsyncHTTPTransport(
                verify=verify,
                http2=options.http2,
                local_address=local,
                proxy=options.proxy_url or None,
            )
        return httpx.AsyncClient(
            verify=verify,
            timeout=None,
            headers={"Accept-Encoding": ACCEPT_ENCODING},
            http2=options.http2,
            proxy=(options.proxy_url or None) if transport is None else None,
            transport=transport,
        )

    def _own_ssl_context(self) -> ssl.SSLContext:
        # ca_file and a client certificate: files parsed once, in a thread, before probing.
        options = self.options
        cert = (options.client_cert, options.client_key) if options.client_cert else None
        try:
            return client_context(
                ca_file=options.ca_file, verify=options.verify_tls, client_cert=cert
            )
        except (OSError, ssl.SSLError) as exc:
            key = "client_cert" if options.client_cert else "ca_file"
            raise ValueError(f"{key}: cannot load: {exc}") from None

    def _new_target(self, target: str) -> HTTPTarget:
        authorization = self._parts.authorization
        if self._lean:
            lean = h11_target(
                target,
                self._spec,
                self._parts.headers,
                host=self.options.host,
                authorization=None if authorization is None else authorization.value,
            )
            if lean is not None:
                return lean
        headers = self._parts.headers
        sni = ""
        if self.options.host or authorization is not None:
            headers = dict(headers)
            if authorization is not None:
                headers["Authorization"] = authorization.value
            if self.options.host:
                headers["Host"] = sni = self.options.host
                try:
                    port = httpx.URL(target).port  # None when it is the scheme's default
                except httpx.InvalidURL:
                    port = None  # the request fails and says why
                if port is not None:
                    headers["Host"] = f"{self.options.host}:{port}"
        return HttpxTarget(target, self._make_client(), headers, sni, self._spec)

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._client_factory is None:
            await load_ssl_context(self.options.verify_tls)
            if self.options.own_ssl_context and self._ssl is None:
                self._ssl = await trio.to_thread.run_sync(self._own_ssl_context)
        await super().run(results, task_status=task_status)

    def _success_code(self, code: int) -> bool:
        if self.options.expected_codes:
            return code in self.options.expected_codes
        return 200 <= code < 300

    def _exchange_extras(
        self, exchange: Exchange, extras: dict[str, Map | Distribution | int]
    ) -> dict[str, int | float | str]:
        """Phase distributions (summed over redirects, as blackbox does) and the connection
        counts into ``extras``; the gauges of the TLS connection the exchange ended on."""
        if self._full:
            _add_phases(extras, exchange.phases)
            new, requests = exchange.new_connections, exchange.requests
            if requests == 1:
                extras["connections"] = Map("state", {"new" if new else "reused": 1})
            else:
                connections = Map("state", {"new": new} if new else {})
                if new < requests:
                    connections.increment("reused", requests - new)
                extras["connections"] = connections
        if self.options.follow_redirects:
            extras["redirects"] = exchange.redirects
        info = exchange.tls
        if info is None:
            return {}
        gauges: dict[str, int | float | str] = {"tls_version": info.version}
        if info.earliest_expiry is not None:
            gauges["cert_expiry"] = info.earliest_expiry
        return gauges

    def _verdict(
        self,
        target: str,
        exchange: Exchange,
        latency: float,
        extras: dict[str, Map | Distribution | int],
        gauges: dict[str, int | float | str],
    ) -> ProbeResult:
        """The result of an exchange (its status code counted in ``extras`` already): the
        status code checked, then the validators."""
        code = exchange.status
        if not self._success_code(code):
            error = f"unexpected status {code} {exchange.reason}".rstrip()
            return ProbeResult(
                target,
                False,
                latency,
                error=error,
                extras=extras,
                gauges=gauges,
                failure=Failure(FailureReason.HTTP_STATUS),
            )
        if self._validators:
            try:
                # The h11 path decodes a body a server compressed unasked only here, under the
                # limit: a gzip bomb must not inflate without bound.
                exchange = exchange.decoded(self.options.max_body_bytes)
            except httpx.HTTPError as exc:
                return ProbeResult(
                    target,
                    False,
                    latency,
                    error=_describe(exc),
                    extras=extras,
                    failure=classify(exc, Phase.RECEIVE),
                )
            failed = self._checks.failures(exchange)
            if failed:
                extras["validation_failure"] = Map(
                    "validator",
                    {name: int(any(n == name for n, _ in failed)) for name in self._validators},
                )
                error = self._parts.scrub("; ".join(why for _, why in failed))
                # The first validator that failed names the failure; the metric
                # validation_failure{validator} counts each of them.
                failure = Failure(FailureReason.VALIDATION, validator=failed[0][0])
                return ProbeResult(
                    target,
                    False,
                    latency,
                    error=error,
                    extras=extras,
                    gauges=gauges,
                    failure=failure,
                )
        return ProbeResult(target, True, latency, extras=extras, gauges=gauges)

    async def probe_once(self, target: str) -> ProbeResult:
        try:
            state = self._clients.get(target)
        except OSError as exc:
            # Building a target's client can need a file descriptor (or, the first time, an
            # import): with none left (EMFILE) that is this target's failure, not the run's end.
            return ProbeResult(
                target,
                False,
                0.0,
                error=f"client: {_describe(exc)}",
                failure=classify(exc, Phase.CONNECT),
            )
        started = trio.current_time()
        try:
            exchange = await state.exchange()
        except EXCHANGE_ERRORS as exc:
            latency = trio.current_time() - started
            extras = self._extras(Map("code"))
            break_connect_cycles(exc)  # httpx's path wraps trio's connect error (see _tcp)
            error = _describe(exc)
            if isinstance(exc, TooManyRedirects):
                error = str(exc)
                extras["redirects"] = exc.redirects
            elif self.options.follow_redirects:
                extras["redirects"] = state.redirects
            error = self._parts.scrub(error)
            return ProbeResult(
                target, False, latency, error=error, extras=extras, failure=classify(exc)
            )
        latency = trio.current_time() - started
        # The status code counted once, as the Map is built (not an increment after).
        extras = self._extras(Map("code", {str(exchange.status): 1}))
        gauges = self._exchange_extras(exchange, extras)
        return self._verdict(target, exchange, latency, extras, gauges)

    def _extras(self, codes: Map) -> dict[str, Map | Distribution | int]:
        """A result's extras before the exchange's own: ``resp-code`` and, with validators,
        ``validation_failure`` (all zero until one fails)."""
        extras: dict[str, Map | Distribution | int] = {"resp-code": codes}
        if self._validators:
            extras["validation_failure"] = Map("validator", dict.fromkeys(self._validators, 0))
        return extras


def _add_phases(extras: dict[str, Map | Distribution | int], phases: Mapping[str, float]) -> None:
    for phase, seconds in phases.items():
        dist = _PHASE_TEMPLATES[phase].clone()
        dist.add_sample(seconds)
        extras[_PHASE_EXTRAS[phase]] = dist


def _describe(exc: BaseException) -> str:
    """``Type: message``; httpx's ConnectError from Trio often has no message of its own (it
    wraps a ``BrokenResourceError``), so the first message down its causes stands in: that is
    where ``CERTIFICATE_VERIFY_FAILED`` or ``Connection refused`` is."""
    if isinstance(exc, HTTP11Error):
        return exc.describe()  # the h11 path's typed errors say it themselves
    cause: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if cause is None or str(cause):
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, BodyTooLarge):
        return f"ReadError: {exc}"  # the lean path's words for the same failure
    if isinstance(exc, UnicodeError):
        return "ConnectError: a host name label is empty or longer than 63 characters"
    message = str(cause) if cause is not None else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


_CAUSE_DEPTH = 5


async def _close_target(state: HTTPTarget) -> None:
    await state.aclose()


_PHASE_EXTRAS = {phase: f"phase_{phase}" for phase in PHASES}
_PHASE_TEMPLATES = {phase: PHASE_BUCKETS.clone() for phase in PHASES}


#: Raises ``ValueError`` for a target that is not an ``http(s)://host`` URL; the config check and
#: targets files use it to reject bad targets where they are written.
check_target = check_http_url


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> HTTPProbe:
    """The probe of a config entry; a body file or secret that cannot be read raises
    ``ValueError`` naming the key, which the runner reports as a ``ConfigError`` naming the probe
    (``trioprobe check`` prints it)."""
    return HTTPProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
