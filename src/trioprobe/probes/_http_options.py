"""The ``http`` probe's configuration: its :class:`Options` (config keys, each checked where it
is given) and :class:`RequestParts`, what every request sends, resolved once from them (the body
file and the auth secret read). Apart from :mod:`.http_probe` because it is the config's half of
the probe type; both names are importable from there.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .._httpbody import MAX_BODY_BYTES
from .._options import path_field
from .._scrub import register_secret, scrub, secret_forms
from .._urls import check_http_url
from ._http_checks import (
    TOKEN,
    BlackboxMatchers,
    HeaderMatch,
    check_header_name,
    check_header_value,
    check_json_value,
    header_checks,
    parse_json_path,
)
from ._net import at_least

__all__ = ["DETAILS", "MAX_BODY_FILE_BYTES", "TRANSPORTS", "Options", "RequestParts"]


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
