"""Small helpers the socket-level probe types (tcp, udp, dns, ping, external) share.

:class:`~trioprobe.probes._base.ScheduledProbe`, their base, lives in ``_base`` beside the
scheduler it runs on; it is re-exported here, where the socket-level types import it from.

Targets are ``host:port`` strings (``[v6addr]:port`` for IPv6 literals) or, where a type has a
``port`` option, a bare host. Failures are reported by cause in a Map with a fixed key set, so a
dashboard can tell a refused port from a timeout without the label set growing unbounded.
"""

from __future__ import annotations

import math
import re
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .._urls import host_name_problem
from ..metrics import Distribution, Map
from ._base import ScheduledProbe

__all__ = [
    "BACKSTOP",
    "ScheduledProbe",
    "TargetError",
    "at_least",
    "check_regex",
    "check_target_host",
    "describe_error",
    "error_cause",
    "error_causes",
    "split_host_port",
    "step_time",
]

#: Seconds the scheduler's cancel scope outlasts a probe's own ``timeout``, for types that keep
#: their own deadline to report partial results (which step timed out, the replies so far).
BACKSTOP = 1.0


def at_least(minimum: int | float) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """An attrs validator: the value must be ``>= minimum`` (NaN is rejected too)."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not value >= minimum:
            raise ValueError(f"{attribute.name} must be >= {minimum}, got {value}")

    return check


def check_regex(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    """An attrs validator: ``None`` or a valid regular expression."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{attribute.name} is not a valid regular expression: {exc}") from None


class TargetError(ValueError):
    """A target string cannot be used (no port, bad port); the message says which and why."""


def split_host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    """``"host:port"``, ``"[::1]:port"`` or (with ``default_port``) a bare host or v6 literal."""
    host, sep, port_text = target.rpartition(":")
    if target.startswith("[") and "]" in target:
        inside, _, rest = target[1:].partition("]")
        host, sep, port_text = inside, ":" if rest.startswith(":") else "", rest[1:]
    elif not sep or ":" in host:
        # No colon, or a bare IPv6 literal ("::1"): the whole string is the host.
        host, sep, port_text = target, "", ""
    if not sep:
        if default_port is None:
            raise TargetError(f"target {target!r} has no port; expected host:port")
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise TargetError(f"target {target!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise TargetError(f"target {target!r}: port {port} is out of range 1-65535")
    if not host:
        raise TargetError(f"target {target!r} has no host")
    return host, port


def check_target_host(target: str) -> None:
    """Raise :class:`TargetError` unless ``target`` is ``host[:port]`` with a host name that can
    be resolved (see :func:`~trioprobe._urls.host_name_problem`); a type's ``check_target``.

    A missing port is not an error here: a type's ``port`` option may supply it.
    """
    host, _ = split_host_port(target, 0)
    problem = host_name_problem(host)
    if problem is not None:
        raise TargetError(f"target {target!r}: {problem}")


def _leaves(exc: BaseException) -> Iterable[BaseException]:
    # trio.open_tcp_stream raises one OSError whose __cause__ groups each address's error.
    yield exc
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        for inner in cause.exceptions:
            yield from _leaves(inner)
    elif cause is not None:
        yield from _leaves(cause)


def error_cause(exc: BaseException) -> str:
    """The cause of a connection error: ``refused``, ``dns``, ``tls``, ``timeout`` or ``other``."""
    for leaf in _leaves(exc):
        # UnicodeError: the resolver's IDNA encoding refused the name (an empty or long label).
        if isinstance(leaf, socket.gaierror | UnicodeError):
            return "dns"
        if isinstance(leaf, ssl.SSLError | ssl.CertificateError):
            return "tls"
        if isinstance(leaf, ConnectionRefusedError):
            return "refused"
        if isinstance(leaf, TimeoutError):
            return "timeout"
    if type(exc).__name__ == "BrokenResourceError" and isinstance(exc.__cause__, ssl.SSLError):
        return "tls"
    return "other"


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of the most specific error inside ``exc`` (e.g. the refusal behind
    trio's "all attempts to connect ... failed")."""
    leaf = exc
    for inner in _leaves(exc):
        leaf = inner
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__


def error_causes(keys: Iterable[str], cause: str | None = None) -> Map:
    """A ``errors`` Map keyed by ``cause`` with every key present (0), ``cause`` counted once.

    Every key is always present so the exported series exist from the first result on, and the
    key set is fixed by the probe type, so it cannot grow with what goes wrong.
    """
    counts = dict.fromkeys(keys, 0)
    if cause is not None:
        counts[cause] = 1
    return Map("cause", counts)


_ONE_BUCKET = Distribution((-math.inf,))


def step_time(seconds: float) -> Distribution:
    """One step's time (connect, TLS handshake...) as a one-bucket histogram: exported as
    ``_sum`` and ``_count``, so it averages; a plain sum would be a ``_seconds_total`` counter
    that nothing can divide."""
    dist = _ONE_BUCKET.clone()
    dist.add_sample(seconds)
    return dist
