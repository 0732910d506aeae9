"""The ``tcp`` probe type: connect to ``host:port``, optionally over TLS, optionally exchange.

A probe connects (``connect_latency``), then with ``tls`` does the handshake
(``tls_handshake_duration`` and, when the certificate was verified, the gauge ``cert_expiry``, its
notAfter in seconds since the epoch), then with ``query`` and/or ``expect`` sends the query and
reads until the reply matches ``expect``
(``exchange_latency``), as blackbox_exporter's tcp module does. Latency is the whole probe.
Each failure is counted in the ``errors`` map under one fixed cause (``refused``, ``timeout``,
``dns``, ``tls``, ``mismatch``, ``closed``, ``other``), so the label set stays bounded.

The deadline is checked inside the probe (same ``timeout`` as the scheduler's cancel scope) so a
timed-out probe still reports which step it was in and counts as ``timeout``.
"""

from __future__ import annotations

import re
import ssl
from typing import TYPE_CHECKING

import attrs
import trio

from .._tls import client_context
from ..failures import Phase
from . import TargetsFn
from ._net import (
    at_least,
    check_regex,
    check_target_host,
)
from ._stepped import StepFailure, SteppedProbe, Steps, connect

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["CAUSES", "Options", "QueryStep", "TCPProbe", "check_target", "make_probe"]

#: The keys of the ``errors`` map, fixed so the exported label set is bounded.
CAUSES = ("refused", "timeout", "dns", "tls", "mismatch", "closed", "other")


@attrs.frozen
class QueryStep:
    """One step of ``query_response`` (blackbox_exporter's tcp module has the same three keys).

    In order: ``expect`` reads lines until one matches; ``send`` writes its text and a newline
    (``${1}`` inserts a group of the last match); ``starttls`` upgrades the
    connection to TLS with the probe's TLS settings.
    """

    expect: str | None = attrs.field(default=None, validator=check_regex)
    send: str | None = None
    starttls: bool = False

    def __attrs_post_init__(self) -> None:
        if self.expect is None and self.send is None and not self.starttls:
            raise ValueError("a query_response step needs expect, send or starttls")


@attrs.frozen
class Options:
    """Config keys of a ``tcp`` probe."""

    #: Port for targets given without one.
    port: int | None = None
    #: Do a TLS handshake after connecting.
    tls: bool = False
    #: Verify the server's certificate (and its name) when ``tls`` is on.
    verify_tls: bool = True
    #: CA bundle (PEM) to verify against instead of the system's.
    ca_file: str | None = None
    #: TLS server name (SNI and verification); default: the target's host.
    server_name: str | None = None
    #: Bytes to send once connected (UTF-8; ``\\n`` in TOML for a newline).
    query: str | None = None
    #: Regular expression the reply must match (searched over the bytes read so far).
    expect: str | None = attrs.field(default=None, validator=check_regex)
    #: Read at most this many reply bytes while waiting for ``expect``.
    max_reply_bytes: int = attrs.field(default=4096, validator=at_least(1))
    #: A dialogue of ``expect``/``send``/``starttls`` steps (SMTP, IMAP, Redis handshakes);
    #: instead of ``query`` and ``expect``.
    query_response: tuple[QueryStep, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.query_response and (self.query is not None or self.expect is not None):
            raise ValueError("query_response: use it instead of query and expect, not with them")
        if any(step.starttls for step in self.query_response) and self.tls:
            raise ValueError("query_response: starttls upgrades a plain connection; tls is on")


class TCPProbe(SteppedProbe[Options]):
    """Probes each ``host:port`` target with a fresh connection per interval."""

    causes = CAUSES

    def __init__(
        self,
        options: Options,
        targets: TargetsFn,
        *,
        interval: float,
        timeout: float,
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        self._expect = re.compile(options.expect.encode()) if options.expect else None
        self._query = options.query.encode() if options.query is not None else None
        self._step_patterns = [
            re.compile(step.expect) if step.expect is not None else None
            for step in options.query_response
        ]

    def _wants_tls(self) -> bool:
        return self.options.tls or any(s.starttls for s in self.options.query_response)

    def _ssl_context(self) -> ssl.SSLContext:
        return client_context(ca_file=self.options.ca_file, verify=self.options.verify_tls)

    async def _walk(self, target: str, attempt: Steps) -> StepFailure | None:
        connected = await connect(target, self.options.port, attempt)
        if isinstance(connected, StepFailure):
            return connected
        host = connected[0]
        stream: trio.abc.Stream = connected[1]
        try:
            t1 = trio.current_time()
            if self.options.tls:
                stream = await self._start_tls(stream, host, attempt)
                t1 = trio.current_time()
            if self.options.query_response:
                attempt.step, attempt.phase = "exchange", Phase.WAIT
                stream, failure = await self._dialogue(stream, host, attempt)
                if failure is None:
                    attempt.timings["exchange_latency"] = trio.current_time() - t1
                return failure
            if self._query is None and self._expect is None:
                return None
            attempt.step, attempt.phase = "exchange", Phase.SEND
            if self._query is not None:
                await stream.send_all(self._query)
            attempt.phase = Phase.WAIT
            if self._expect is not None:
                failure = await self._read_expected(stream)
                if failure is not None:
                    return failure
            attempt.timings["exchange_latency"] = trio.current_time() - t1
            return None
        finally:
            await trio.aclose_forcefully(stream)

    async def _start_tls(
        self, stream: trio.abc.Stream, host: str, attempt: Steps, step: str = "tls handshake"
    ) -> trio.SSLStream[trio.abc.Stream]:
        assert self._ssl is not None
        attempt.step, attempt.phase = step, Phase.TLS
        started = trio.current_time()
        tls = trio.SSLStream(stream, self._ssl, server_hostname=self.options.server_name or host)
        try:
            await tls.do_handshake()
        except BaseException:
            # The caller closes the stream it holds: the plain one, under the SSLStream.
            await trio.aclose_forcefully(tls)
            raise
        attempt.timings["tls_handshake_duration"] = trio.current_time() - started
        cert = tls.getpeercert()
        if cert and "notAfter" in cert:
            expiry = ssl.cert_time_to_seconds(str(cert["notAfter"]))
            # The notAfter as seconds since the epoch, as the http probe and blackbox's
            # probe_ssl_earliest_cert_expiry report it (alert on `- time() < 86400*14`).
            # Whole seconds, as an int: the live table shows floats as durations.
            attempt.gauges["cert_expiry"] = round(expiry)
        return tls

    async def _dialogue(
        self, stream: trio.abc.Stream, host: str, attempt: Steps
    ) -> tuple[trio.abc.Stream, StepFailure | None]:
        """Run ``query_response``; returns the stream (TLS after a starttls) and the failure."""
        lines = _LineReader(stream, self.options.max_reply_bytes)
        match: re.Match[str] | None = None
        for index, step in enumerate(self.options.query_response):
            where = f"query_response[{index}]"
            if step.expect is not None:
                attempt.step, attempt.phase = f"{where} expect", Phase.WAIT
                pattern = self._step_patterns[index]
                assert pattern is not None
                found, failure = await lines.until(pattern)
                if failure is not None:
                    return lines.stream, StepFailure(failure.cause, f"{where}: {failure.message}")
                match = found
            if step.send is not None:
                attempt.step, attempt.phase = f"{where} send", Phase.SEND
                await lines.stream.send_all(_expand(step.send, match).encode() + b"\n")
            if step.starttls:
                lines = _LineReader(
                    await self._start_tls(lines.stream, host, attempt, f"{where} starttls"),
                    self.options.max_reply_bytes,
                )
        return lines.stream, None

    async def _read_expected(self, stream: trio.abc.Stream) -> StepFailure | None:
        assert self._expect is not None
        reply = b""
        limit = self.options.max_reply_bytes
        while len(reply) < limit:
            chunk = await stream.receive_some(limit - len(reply))
            if not chunk:
                return StepFailure(
                    "closed" if not reply else "mismatch",
                    f"connection closed; reply {reply[:80]!r} did not match "
                    f"/{self._expect.pattern.decode()}/",
                )
            reply += chunk
            if self._expect.search(reply):
                return None
        return StepFailure(
            "mismatch",
            f"reply {reply[:80]!r}... ({limit} bytes) did not match "
            f"/{self._expect.pattern.decode()}/",
        )


class _LineReader:
    """Lines from a stream for ``query_response``'s ``expect`` (matched without the newline),
    with at most ``limit`` bytes read in all, as ``max_reply_bytes`` bounds ``expect``."""

    def __init__(self, stream: trio.abc.Stream, limit: int) -> None:
        self.stream = stream
        self._limit = limit
        self._read = 0
        self._buffer = b""

    async def until(
        self, pattern: re.Pattern[str]
    ) -> tuple[re.Match[str] | None, StepFailure | None]:
        seen: list[str] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                raw, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                found = pattern.search(line)
                if found is not None:
                    return found, None
                seen.append(line)
                continue
            if self._read >= self._limit:
                return None, StepFailure(
                    "mismatch",
                    f"no line matched /{pattern.pattern}/ in {self._limit} bytes "
                    f"(last: {_last(seen, self._buffer)!r})",
                )
            chunk = await self.stream.receive_some(self._limit - self._read)
            if not chunk:
                cause = "closed" if not seen and not self._buffer else "mismatch"
                return None, StepFailure(
                    cause,
                    f"connection closed; no line matched /{pattern.pattern}/ "
                    f"(last: {_last(seen, self._buffer)!r})",
                )
            self._read += len(chunk)
            self._buffer += chunk


def _last(seen: list[str], buffer: bytes) -> str:
    text = buffer.decode("utf-8", "replace") if buffer else (seen[-1] if seen else "")
    return text[:80]


_BLACKBOX_GROUP = re.compile(r"\$\{(\w+)\}|\$(\d+)")


def _expand(template: str, match: re.Match[str] | None) -> str:
    """``send`` with ``${1}``, ``$1`` or ``${name}`` (blackbox's form) replaced by the last
    match's groups; a group that did not take part, or does not exist, inserts nothing."""
    if match is None:
        return template

    def group(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2)
        key: int | str = int(name) if name.isdigit() else name
        try:
            return match.group(key) or ""
        except IndexError:
            return ""

    return _BLACKBOX_GROUP.sub(group, template)


#: Raises ``ValueError`` for a target whose host cannot be resolved (``a..b:80``): the config
#: check and targets files reject it where it is written.
check_target = check_target_host


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> TCPProbe:
    return TCPProbe(
        options,
        targets,
        interval=spec.interval,
        timeout=spec.timeout,
    )
