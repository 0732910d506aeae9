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
is probed instead over one keep-alive connection of its own, h11 over a Trio TCP stream
(:mod:`trioprobe._lean_http`), at a fraction of the CPU, reporting the same results, errors, phases
and ``connections`` counts. The httpx path is kept when the probe needs it: an ``https://`` target,
``follow_redirects``, a ``client_factory`` given by the caller, or ``transport = "httpx"``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import httpcore  # noqa: F401 (imported here, not lazily by the first client mid-run)
import httpx
import trio

from .._httpbody import ACCEPT_ENCODING, MAX_BODY_BYTES, BodyTooLarge, decode_body, send_bounded
from .._httptrace import PHASES, RequestTrace, TLSInfo, release_response, tls_info
from .._lean_http import LeanConnection, LeanError, LeanResponse
from .._options import path_field
from .._scrub import register_secret, scrub, secret_forms
from .._tls import client_context, load_ssl_context, ssl_context
from .._urls import check_http_url
from ..failures import Failure, FailureReason, Phase, classify
from ..metrics import Distribution, Map
from ..results import ProbeResult
from . import TargetsFn
from ._base import ClientPerTargetProbe, PerTargetClients
from ._http_checks import (
    TOKEN,
    BlackboxMatchers,
    HeaderCheck,
    HeaderMatch,
    JSONPath,
    check_header_name,
    check_header_value,
    check_json_value,
    header_checks,
    json_equal,
    parse_json_path,
    quote,
    subset_mismatch,
)
from ._net import at_least

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


#: The largest ``body_file`` read: a probe's request body, not an upload.
MAX_BODY_FILE_BYTES = 1024 * 1024
# The largest secret file read (a token or a password).
_MAX_SECRET_BYTES = 64 * 1024
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\Z")
# Headers with keys of their own: `host` (which also sets SNI) and the auth keys (whose secret
# would otherwise sit in the config in plain text and in every repr of it).
_OWN_KEYS = {"host": "host", "authorization": "basic_auth_* or bearer_token_*"}


def _check_method(_: object, __: object, value: str) -> None:
    if not TOKEN.match(value):
        raise ValueError(f"method: {value!r} is not an HTTP method (e.g. GET, POST, HEAD)")


def _check_headers(_: object, __: object, value: Mapping[str, str]) -> None:
    for name, text in value.items():
        check_header_name(name, "headers")
        own = _OWN_KEYS.get(name.lower())
        if own is not None:
            raise ValueError(f"headers: set {name} with the {own} key(s), not in headers")
        check_header_value(name, text)


def _check_host(_: object, __: object, value: str) -> None:
    if value and not _HOSTNAME.match(value):
        raise ValueError(
            f"host: {value!r} is not a host name (no scheme, port or path: the port is the "
            "target's)"
        )


def _check_json_paths(_: object, __: object, value: Mapping[str, Any]) -> None:
    for path, expected in value.items():
        parse_json_path(path)
        check_json_value(expected, f"json_paths.{path}")


def _check_json_subset(_: object, __: object, value: Mapping[str, Any]) -> None:
    check_json_value(dict(value), "json_subset")


def _check_header_checks(_: object, __: object, value: Mapping[str, str]) -> None:
    header_checks(value)


#: Values of the ``transport`` key: ``auto`` takes the lean path where it applies.
TRANSPORTS = ("auto", "httpx")


def _check_transport(_: object, __: object, value: str) -> None:
    if value not in TRANSPORTS:
        raise ValueError(f"transport: {value!r} is not one of {', '.join(TRANSPORTS)}")


#: Values of the ``detail`` key.
DETAILS = ("basic", "full")


def _check_detail(_: object, __: object, value: str) -> None:
    if value not in DETAILS:
        raise ValueError(f"detail: {value!r} is not one of {', '.join(DETAILS)}")


def _one_of(options: Options, *keys: str) -> None:
    given = [key for key in keys if getattr(options, key)]
    if len(given) > 1:
        raise ValueError(f"give either {' or '.join(keys)}, not both")


@attrs.frozen
class Options:
    """Config keys of an ``http`` probe (docs/config.md, "http")."""

    method: str = attrs.field(default="GET", validator=_check_method)
    #: Status codes that count as success; empty means any 2xx.
    expected_codes: tuple[int, ...] = ()
    #: If set, the body must match this regular expression (``re.search``).
    body_regex: str | None = attrs.field(default=None)
    headers: Mapping[str, str] = attrs.field(factory=dict, validator=_check_headers)
    #: Verify TLS certificates.
    verify_tls: bool = True
    #: The request body, as text (sent UTF-8 encoded); or ``body_file``, sent as it is.
    body: str = ""
    body_file: str = path_field("")
    #: Host name for the ``Host`` header, TLS SNI and certificate verification, while the
    #: connection goes to the target URL's address.
    host: str = attrs.field(default="", validator=_check_host)
    #: Follow 3xx redirects (counted in ``redirects``), at most ``max_redirects`` per probe.
    follow_redirects: bool = False
    max_redirects: int = 10
    basic_auth_username: str = ""
    #: Where the basic auth password comes from: an environment variable's name, or a file.
    basic_auth_password_env: str = ""
    basic_auth_password_file: str = path_field("")
    #: Where the bearer token comes from: an environment variable's name, or a file.
    bearer_token_env: str = ""
    bearer_token_file: str = path_field("")
    #: JSON key path -> expected value, e.g. ``{"status" = "ok", "items[0].up" = true}``.
    json_paths: Mapping[str, Any] = attrs.field(factory=dict, validator=_check_json_paths)
    #: The JSON body must contain this (objects: these keys, recursively).
    json_subset: Mapping[str, Any] = attrs.field(factory=dict, validator=_check_json_subset)
    #: Response header -> regex its value must match (``""``: the header must be present).
    header_checks: Mapping[str, str] = attrs.field(factory=dict, validator=_check_header_checks)
    #: ``auto``: plain ``http://`` targets use the lean h11 path (about a third of httpx's CPU
    #: per probe) unless ``follow_redirects`` is set; ``httpx``: always httpx.
    transport: str = attrs.field(default="auto", validator=_check_transport)
    #: The largest response body read (after decompression) on either path; a larger one fails
    #: the probe (``ReadError: response body larger than the N-byte limit``).
    max_body_bytes: int = attrs.field(default=MAX_BODY_BYTES, validator=at_least(1))
    #: What is exported per target: ``basic`` (latency, status codes, failures: about a dozen
    #: series) or ``full`` (also the phase histograms and connection counts, ~100 more).
    detail: str = attrs.field(default="basic", validator=_check_detail)
    #: CA bundle (PEM) to verify servers against instead of the system's.
    ca_file: str = path_field("")
    #: Client certificate and its key (PEM), for servers that ask for one (mutual TLS).
    client_cert: str = path_field("")
    client_key: str = path_field("")
    #: Send requests through this proxy (``http://`` or ``https://``; https targets tunnel
    #: through it with CONNECT). Off: the ``HTTP(S)_PROXY`` environment, as before.
    proxy_url: str = ""
    #: blackbox_exporter's validators: the body must match none of / each of these regexes...
    fail_if_body_matches: tuple[str, ...] = ()
    fail_if_body_not_matches: tuple[str, ...] = ()
    #: ...and these headers must not match / must match (a missing one fails unless
    #: ``allow_missing``).
    fail_if_header_matches: tuple[HeaderMatch, ...] = ()
    fail_if_header_not_matches: tuple[HeaderMatch, ...] = ()
    #: Offer HTTP/2 (negotiated by ALPN, so over https).
    http2: bool = False
    #: ``ip4`` or ``ip6``: connect over that address family only; ``""``: either.
    ip_protocol: str = attrs.field(default="", validator=attrs.validators.in_(("", "ip4", "ip6")))
    #: The local address connections are made from.
    source_address: str = ""

    @body_regex.validator
    def _check_regex(self, _: object, value: str | None) -> None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"body_regex is not a valid regular expression: {exc}") from None

    def __attrs_post_init__(self) -> None:
        _one_of(self, "body", "body_file")
        _one_of(self, "basic_auth_password_env", "basic_auth_password_file")
        _one_of(self, "bearer_token_env", "bearer_token_file")
        basic = self.basic_auth_password_env or self.basic_auth_password_file
        if self.basic_auth_username and not basic:
            raise ValueError(
                "basic_auth_username needs basic_auth_password_env or basic_auth_password_file"
            )
        if basic and not self.basic_auth_username:
            raise ValueError("basic auth needs basic_auth_username beside its password")
        if ":" in self.basic_auth_username:
            raise ValueError("basic_auth_username must not contain ':'")
        if basic and (self.bearer_token_env or self.bearer_token_file):
            raise ValueError("give either basic auth or a bearer token, not both")
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("client_cert and client_key go together")
        if self.proxy_url:
            try:
                check_http_url(self.proxy_url)
            except ValueError as exc:
                raise ValueError(f"proxy_url: {exc}") from None
        if self.source_address:
            try:
                ipaddress.ip_address(self.source_address)
            except ValueError:
                raise ValueError(
                    f"source_address: {self.source_address!r} is not an IP address"
                ) from None
            if self.ip_protocol:
                raise ValueError("give either ip_protocol or source_address (its family), not both")
        BlackboxMatchers.compile(
            self.fail_if_body_matches,
            self.fail_if_body_not_matches,
            self.fail_if_header_matches,
            self.fail_if_header_not_matches,
        )

    @property
    def needs_httpx(self) -> bool:
        """Options only the httpx path has: the lean path is not taken for them."""
        return bool(self.proxy_url or self.http2 or self.ip_protocol or self.source_address)

    @property
    def own_ssl_context(self) -> bool:
        """Whether the probe needs a TLS context of its own (not the process's shared one)."""
        return bool(self.ca_file or self.client_cert)


def _read_limited(path: str, limit: int, key: str) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ValueError(f"{key}: {path} is larger than the {limit}-byte limit")
    return data


def _secret(env: str, file: str, key: str) -> str | None:
    """The secret named by ``<key>_env`` or ``<key>_file``; ``ValueError`` never quotes it."""
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise ValueError(f"{key}_env: environment variable {env} is not set or empty")
        return value
    if not file:
        return None
    try:
        # One trailing line break is the file's, not the secret's (echo ... > file).
        value = _read_limited(file, _MAX_SECRET_BYTES, f"{key}_file").decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{key}_file: {file} is not UTF-8 text") from None
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ValueError(f"{key}_file: {file} is empty")
    return value


class _Secret:
    """A header value that must not be shown: its repr and str hide it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


@attrs.define(repr=False)
class RequestParts:
    """What every request of a probe sends, resolved once from its Options (secrets read)."""

    headers: dict[str, str]
    body: bytes | None
    authorization: _Secret | None
    #: Texts to cut out of any error message (the secret in every form it is sent).
    redact: tuple[str, ...]

    @classmethod
    def load(cls, options: Options) -> RequestParts:
        """Read the body file and the secrets; ``ValueError`` names the key that failed."""
        body: bytes | None = options.body.encode() if options.body else None
        if options.body_file:
            body = _read_limited(options.body_file, MAX_BODY_FILE_BYTES, "body_file")
        headers = dict(options.headers)
        authorization = None
        redact: tuple[str, ...] = ()
        password = _secret(
            options.basic_auth_password_env, options.basic_auth_password_file, "basic_auth_password"
        )
        token = _secret(options.bearer_token_env, options.bearer_token_file, "bearer_token")
        if password is not None:
            pair = f"{options.basic_auth_username}:{password}".encode()
            encoded = base64.b64encode(pair).decode("ascii")
            authorization = _Secret(f"Basic {encoded}")
            redact = (password, encoded)
            register_secret(secret_forms(password, user=options.basic_auth_username))
        elif token is not None:
            try:
                check_header_value("Authorization", token)
            except ValueError:
                key = "bearer_token_env" if options.bearer_token_env else "bearer_token_file"
                raise ValueError(
                    f"{key}: the token has a line break, a control or a non-ASCII character"
                ) from None
            authorization = _Secret(f"Bearer {token}")
            redact = (token,)
            register_secret(secret_forms(token))
        return cls(headers, body, authorization, tuple(r for r in redact if r))

    def scrub(self, text: str) -> str:
        """``text`` without any secret (this probe's or another's), whole or in part."""
        for secret in self.redact:
            text = text.replace(secret, "<secret>")
        return scrub(text)


class _Target:
    """A target's client and the headers of its requests (``Host`` depends on its port); or,
    on the lean path, its connection and request headers (``client`` is then None)."""

    __slots__ = ("client", "headers", "lean", "lean_headers", "sni")

    def __init__(
        self,
        client: httpx.AsyncClient | None,
        headers: dict[str, str],
        sni: str,
        lean: LeanConnection | None = None,
        lean_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.client = client
        self.headers = headers
        self.sni = sni
        self.lean = lean
        self.lean_headers = lean_headers or []


class HTTPProbe(ClientPerTargetProbe[_Target]):
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
        self._pattern = re.compile(options.body_regex) if options.body_regex else None
        self._header_checks: tuple[HeaderCheck, ...] = header_checks(options.header_checks)
        self._json_paths: tuple[tuple[JSONPath, Any], ...] = tuple(
            (parse_json_path(path), expected) for path, expected in options.json_paths.items()
        )
        self._json_subset = dict(options.json_subset)
        self._blackbox = BlackboxMatchers.compile(
            options.fail_if_body_matches,
            options.fail_if_body_not_matches,
            options.fail_if_header_matches,
            options.fail_if_header_not_matches,
        )
        self._validators = (
            tuple(
                name
                for name, on in (
                    ("regex", self._pattern is not None),
                    ("header", bool(self._header_checks)),
                    ("json_path", bool(self._json_paths)),
                    ("json_subset", bool(self._json_subset)),
                )
                if on
            )
            + self._blackbox.names()
        )
        self._client_factory = client_factory
        self._make_client = client_factory or self._default_client
        self._clients = PerTargetClients[_Target](self._new_target, _close_target)
        self._tls: dict[str, TLSInfo] = {}
        self._lean = (
            client_factory is None
            and options.transport == "auto"
            and not options.follow_redirects
            and not options.needs_httpx
        )
        self._ssl: ssl.SSLContext | None = None
        self._method = options.method.encode("ascii")
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

    def _new_target(self, target: str) -> _Target:
        if self._lean:
            lean = self._lean_target(target)
            if lean is not None:
                return lean
        headers = self._parts.headers
        sni = ""
        if self.options.host or self._parts.authorization is not None:
            headers = dict(headers)
            if self._parts.authorization is not None:
                headers["Authorization"] = self._parts.authorization.value
            if self.options.host:
                headers["Host"] = sni = self.options.host
                try:
                    port = httpx.URL(target).port  # None when it is the scheme's default
                except httpx.InvalidURL:
                    port = None  # the request fails and says why
                if port is not None:
                    headers["Host"] = f"{self.options.host}:{port}"
        return _Target(self._make_client(), headers, sni)

    def _lean_target(self, target: str) -> _Target | None:
        """The lean path's connection and headers for a plain ``http://`` target; None for one
        the httpx path takes (https, user:password@ in the URL, or a URL httpx will reject
        with its own words)."""
        try:
            url = httpx.URL(target)
        except httpx.InvalidURL:
            return None
        if url.scheme != "http" or not url.host or url.userinfo:
            return None  # https, or credentials in the URL: httpx's own rules apply
        host = url.netloc.decode("ascii")
        if self.options.host:
            host = self.options.host if url.port is None else f"{self.options.host}:{url.port}"
        # httpx's defaults, less Accept-Encoding (the lean path does not decompress, so it does
        # not ask for compression) and with its own User-Agent; configured headers override.
        given = {name.lower() for name in self._parts.headers}
        headers = [(b"Host", host.encode("ascii"))]
        headers += [
            (name, value)
            for name, value in ((b"Accept", b"*/*"), (b"User-Agent", _USER_AGENT))
            if name.decode().lower() not in given
        ]
        headers += [(k.encode("ascii"), v.encode("ascii")) for k, v in self._parts.headers.items()]
        if self._parts.authorization is not None:
            headers.append((b"Authorization", self._parts.authorization.value.encode("ascii")))
        body = self._parts.body
        if (body or self.options.method in _BODY_METHODS) and "content-length" not in given:
            headers.append((b"Content-Length", str(len(body or b"")).encode("ascii")))
        connection = LeanConnection(
            url.host, url.port or 80, url.raw_path, max_body=self.options.max_body_bytes
        )
        return _Target(None, {}, "", lean=connection, lean_headers=headers)

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

    def _trace_extras(
        self, target: str, traces: list[RequestTrace], extras: dict[str, Map | Distribution | int]
    ) -> dict[str, int | float | str]:
        """Phase distributions (summed over redirects, as blackbox does) and the connection
        counts into ``extras``; the TLS gauges of the last request's connection."""
        if self._full:
            phases = traces[0].phases()
            for trace in traces[1:]:
                for phase, seconds in trace.phases().items():
                    phases[phase] = phases.get(phase, 0.0) + seconds
            _add_phases(extras, phases)
            new = sum(trace.new_connection for trace in traces)
            connections = Map("state", {"new": new} if new else {})
            if new < len(traces):
                connections.increment("reused", len(traces) - new)
            extras["connections"] = connections
        last = traces[-1]
        if last.ssl_object is not None:
            self._tls[target] = tls_info(last.ssl_object)
        elif last.new_connection:
            self._tls.pop(target, None)  # a new plain connection: no TLS to report
        info = self._tls.get(target)
        if info is None:
            return {}
        gauges: dict[str, int | float | str] = {"tls_version": info.version}
        if info.earliest_expiry is not None:
            gauges["cert_expiry"] = info.earliest_expiry
        return gauges

    async def _exchange(
        self, state: _Target, target: str, traces: list[RequestTrace]
    ) -> tuple[httpx.Response, int]:
        """Send the request, following redirects if configured; the last response and the
        number of redirects followed. Each response is read and released before the next."""
        trace = RequestTrace()
        traces.append(trace)
        extensions: dict[str, Any] = {"trace": trace}
        if state.sni:
            extensions["sni_hostname"] = state.sni
        client = state.client
        assert client is not None  # only lean targets have none, and they never get here
        request = client.build_request(
            self.options.method,
            target,
            headers=state.headers,
            content=self._parts.body,
            extensions=extensions,
        )
        redirects = 0
        while True:
            response = await send_bounded(client, request, self.options.max_body_bytes)
            release_response(response)
            follow = response.next_request
            if follow is None or not self.options.follow_redirects:
                return response, redirects
            if redirects == self.options.max_redirects:
                raise _TooManyRedirects(redirects)
            redirects += 1
            trace = RequestTrace()
            traces.append(trace)
            extensions = {"trace": trace}
            # The name override is the original host's; httpx already set Host for another.
            if state.sni and follow.url.host == request.url.host:
                extensions["sni_hostname"] = state.sni
            follow.extensions = extensions
            request = follow

    async def _probe_lean(
        self,
        state: _Target,
        lean: LeanConnection,
        target: str,
        extras: dict[str, Map | Distribution | int],
    ) -> ProbeResult:
        """The lean path's probe_once: the same results as the httpx path's for the same
        exchange (phases, connection counts, errors named like httpx's)."""
        started = trio.current_time()
        try:
            response = await lean.request(self._method, state.lean_headers, self._parts.body)
        except LeanError as exc:
            latency = trio.current_time() - started
            error = self._parts.scrub(exc.describe())
            return ProbeResult(
                target, False, latency, error=error, extras=extras, failure=classify(exc)
            )
        latency = trio.current_time() - started
        if self._full:
            _add_phases(extras, response.phases)
            opened = "new" if response.new_connection else "reused"
            extras["connections"] = Map("state", {opened: 1})
        return self._verdict(
            target, response.status_code, response.reason_phrase, response, latency, extras, {}
        )

    def _verdict(
        self,
        target: str,
        code: int,
        reason: str,
        response: httpx.Response | LeanResponse,
        latency: float,
        extras: dict[str, Map | Distribution | int],
        gauges: dict[str, int | float | str],
    ) -> ProbeResult:
        """The result of a response: status code counted, then checked, then the validators."""
        codes = extras["resp-code"]
        assert isinstance(codes, Map)
        codes.increment(str(code))
        if not self._success_code(code):
            error = f"unexpected status {code} {reason}".rstrip()
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
            if isinstance(response, LeanResponse):
                # The validators read an httpx.Response (text decoding, multi-value headers):
                # built only when there is something to validate, so the checks are the same code.
                try:
                    response = _lean_as_httpx(response, self.options.max_body_bytes)
                except httpx.HTTPError as exc:
                    return ProbeResult(
                        target,
                        False,
                        latency,
                        error=_describe(exc),
                        extras=extras,
                        failure=classify(exc, Phase.RECEIVE),
                    )
            failed = self._validate(response)
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

    def _validate(self, response: httpx.Response) -> list[tuple[str, str]]:
        """(validator, why) for each validator the response fails."""
        failed: list[tuple[str, str]] = []
        if self._pattern is not None and not self._pattern.search(response.text):
            failed.append(("regex", f"body did not match /{self._pattern.pattern}/"))
        for check in self._header_checks:
            problem = check.problem(response.headers)
            if problem is not None:
                failed.append(("header", problem))
                break
        if self._json_paths or self._json_subset:
            failed.extend(self._validate_json(response.content))
        if self._blackbox.names():
            failed.extend(self._blackbox.problems(response.text, response.headers))
        return failed

    def _validate_json(self, content: bytes) -> list[tuple[str, str]]:
        try:
            document = json.loads(content)
        except ValueError:
            reason = f"body is not JSON: {quote(content[:40].decode('utf-8', 'replace'))}"
            names = ("json_path",) * bool(self._json_paths) + ("json_subset",) * bool(
                self._json_subset
            )
            return [(name, reason) for name in names]
        failed: list[tuple[str, str]] = []
        for path, expected in self._json_paths:
            found, value = path.find(document)
            if not found:
                failed.append(("json_path", f"JSON {path.text}: {value} missing"))
                break
            if not json_equal(value, expected):
                failed.append(
                    ("json_path", f"JSON {path.text} is {quote(value)}, expected {quote(expected)}")
                )
                break
        if self._json_subset:
            problem = subset_mismatch(document, self._json_subset)
            if problem is not None:
                failed.append(("json_subset", f"JSON subset: {problem}"))
        return failed

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
        codes = Map("code")
        extras: dict[str, Map | Distribution | int] = {"resp-code": codes}
        if self._validators:
            extras["validation_failure"] = Map("validator", dict.fromkeys(self._validators, 0))
        if state.lean is not None:
            return await self._probe_lean(state, state.lean, target, extras)
        traces: list[RequestTrace] = []
        started = trio.current_time()
        try:
            response, redirects = await self._exchange(state, target, traces)
        except (httpx.HTTPError, httpx.InvalidURL, _TooManyRedirects, UnicodeError) as exc:
            # InvalidURL is not an HTTPError: without it, one malformed line in a targets file
            # would end the probe and the run instead of failing that target. UnicodeError:
            # the resolver refused the host name (an empty or over-long label), unwrapped.
            latency = trio.current_time() - started
            error = _describe(exc)
            if isinstance(exc, _TooManyRedirects):
                error = str(exc)
                extras["redirects"] = exc.redirects
            elif self.options.follow_redirects:
                extras["redirects"] = len(traces) - 1 if traces else 0
            error = self._parts.scrub(error)
            return ProbeResult(
                target, False, latency, error=error, extras=extras, failure=classify(exc)
            )
        latency = trio.current_time() - started
        gauges = self._trace_extras(target, traces, extras)
        if self.options.follow_redirects:
            extras["redirects"] = redirects
        return self._verdict(
            target,
            response.status_code,
            response.reason_phrase,
            response,
            latency,
            extras,
            gauges,
        )


def _add_phases(extras: dict[str, Map | Distribution | int], phases: dict[str, float]) -> None:
    for phase, seconds in phases.items():
        dist = _PHASE_TEMPLATES[phase].clone()
        dist.add_sample(seconds)
        extras[_PHASE_EXTRAS[phase]] = dist


def _lean_as_httpx(lean: LeanResponse, limit: int) -> httpx.Response:
    """An httpx.Response of a lean one, its body decoded under ``limit``: httpx.Response's own
    ``content=`` would inflate a gzip bomb the server sent unasked, without bound."""
    response = httpx.Response(lean.status_code, headers=lean.headers)
    encoding = response.headers.get("content-encoding", "")
    response._content = decode_body(lean.content, encoding, limit)
    return response


def _describe(exc: BaseException) -> str:
    """``Type: message``; httpx's ConnectError from Trio often has no message of its own (it
    wraps a ``BrokenResourceError``), so the first message down its causes stands in: that is
    where ``CERTIFICATE_VERIFY_FAILED`` or ``Connection refused`` is."""
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


class _TooManyRedirects(Exception):
    def __init__(self, redirects: int) -> None:
        super().__init__(f"too many redirects: more than {redirects}")
        self.redirects = redirects


async def _close_target(state: _Target) -> None:
    if state.lean is not None:
        await state.lean.aclose()
    if state.client is not None:
        await state.client.aclose()


_USER_AGENT = b"trioprobe"
# Methods whose empty body httpx announces with Content-Length: 0, as the lean path does.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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
