"""What an HTTP target must look like, checked once where the target is read.

A target without a scheme or host (``127.0.0.1:8080/health``, an empty string) would otherwise
fail at every probe, looking like an outage of a target that was never valid.
"""

from __future__ import annotations

import ipaddress

import httpx

__all__ = ["check_host_name", "check_http_url", "host_name_problem"]

#: What a resolver takes (RFC 1035): a longer name fails every lookup.
_MAX_NAME = 253


def host_name_problem(host: str) -> str | None:
    """Why ``host`` (a name or an IP literal, brackets allowed) cannot be resolved, or ``None``.

    A label longer than 63 characters or an empty one (``a..b``) makes the resolver's IDNA
    encoding raise ``UnicodeError`` at the first probe: found here instead, where the target is
    written, so ``check`` names it.
    """
    if not host:
        return "empty host name"
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(literal.partition("%")[0])
        return None
    except ValueError:
        pass
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        return (
            f"host name {host[:80]!r} has an empty label or one longer than 63 characters "
            "(or is not a valid international name)"
        )
    if len(encoded.rstrip(b".")) > _MAX_NAME:
        return f"host name is {len(encoded)} characters long; at most {_MAX_NAME} resolve"
    return None


def check_host_name(host: str) -> None:
    """Raise ``ValueError`` saying why ``host`` cannot be resolved, if it cannot."""
    problem = host_name_problem(host)
    if problem is not None:
        raise ValueError(problem)


def check_http_url(target: str) -> httpx.URL:
    """``target`` as a URL, or ``ValueError`` saying what is wrong (callers name the target).

    Accepts ``http(s)://host[:port][/path][?query]``.
    """
    if not target.strip():
        raise ValueError("empty target; expected http(s)://host[:port]/path")
    try:
        url = httpx.URL(target)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"{exc}; expected http(s)://host[:port]/path") from None
    if url.scheme not in ("http", "https"):
        raise ValueError("no http:// or https:// scheme; expected http(s)://host[:port]/path")
    if not url.host:
        raise ValueError("no host; expected http(s)://host[:port]/path")
    check_host_name(url.host)
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError("port out of range; expected http(s)://host[:port]/path")
    return url
