"""What an HTTP target must look like, checked once where the target is read.

A target without a scheme or host (``127.0.0.1:8080/health``, an empty string) would otherwise
fail at every probe, looking like an outage of a target that was never valid.
"""

from __future__ import annotations

import httpx

__all__ = ["check_http_url"]


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
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError("port out of range; expected http(s)://host[:port]/path")
    return url
