"""The ``http`` probe's per-target state: one class per client transport, behind one Protocol.

A target keeps what its requests need between probes: its keep-alive connection, its request
headers, the TLS facts of its connection. :class:`HttpxTarget` carries them over httpx (https,
redirects, proxies, a caller's client); :class:`H11Target` over one keep-alive connection on a
raw socket (:mod:`trioprobe._lean_http`), for plain ``http://`` targets. The probe holds either
as an :class:`HTTPTarget` and calls :meth:`~HTTPTarget.exchange`, which returns the
transport-neutral :class:`~trioprobe._exchange.Exchange` or raises one of
:data:`EXCHANGE_ERRORS` (the h11 path's typed errors are httpx's classes of the same names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import httpx

from .._exchange import Exchange, from_httpx
from .._httpbody import send_bounded
from .._httptrace import RequestTrace, TLSInfo, release_response, tls_info
from .._lean_http import H11Client

__all__ = [
    "EXCHANGE_ERRORS",
    "H11Target",
    "HTTPTarget",
    "HttpxTarget",
    "RequestSpec",
    "TooManyRedirects",
    "h11_target",
]


class TooManyRedirects(Exception):
    """More redirects than ``max_redirects`` (the probe's, not httpx's)."""

    def __init__(self, redirects: int) -> None:
        super().__init__(f"too many redirects: more than {redirects}")
        self.redirects = redirects


#: What :meth:`HTTPTarget.exchange` raises for a failed exchange. ``InvalidURL`` is not an
#: ``HTTPError``: without it one malformed line in a targets file would end the probe (and the
#: run) instead of failing that target; ``UnicodeError``: the resolver refused the host name.
EXCHANGE_ERRORS = (httpx.HTTPError, httpx.InvalidURL, TooManyRedirects, UnicodeError)


@attrs.frozen
class RequestSpec:
    """What every request of a probe sends and accepts, the same for all its targets."""

    method: str
    body: bytes | None
    max_body: int
    follow_redirects: bool
    max_redirects: int


class HTTPTarget(Protocol):
    """One target's transport state."""

    #: Redirects followed by the last exchange, finished or not.
    redirects: int

    async def exchange(self) -> Exchange:
        """Send the probe's request; the response read in full (see the module docstring)."""
        ...

    async def aclose(self) -> None:
        """Close the target's connections."""
        ...


class HttpxTarget:
    """A target probed with its own ``httpx.AsyncClient``; ``headers`` are its request's,
    ``sni`` the TLS server name override (the ``host`` option), ``tls`` the facts of its
    current TLS connection (kept across reuse: a reused connection has no handshake to read)."""

    __slots__ = ("client", "headers", "redirects", "sni", "spec", "tls", "url")

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        headers: Mapping[str, str],
        sni: str,
        spec: RequestSpec,
    ) -> None:
        self.url = url
        self.client = client
        self.headers = headers
        self.sni = sni
        self.spec = spec
        self.redirects = 0
        self.tls: TLSInfo | None = None

    async def exchange(self) -> Exchange:
        traces: list[RequestTrace] = []
        self.redirects = 0
        response = await self._send(traces)
        last = traces[-1]
        if last.ssl_object is not None:
            self.tls = tls_info(last.ssl_object)
        elif last.new_connection:
            self.tls = None  # a new plain connection: no TLS to report
        return from_httpx(response, traces, self.tls)

    async def _send(self, traces: list[RequestTrace]) -> httpx.Response:
        """Send the request, following redirects if configured: the last response. Each
        response is read and released before the next."""
        spec, client = self.spec, self.client
        trace = RequestTrace()
        traces.append(trace)
        extensions: dict[str, Any] = {"trace": trace}
        if self.sni:
            extensions["sni_hostname"] = self.sni
        request = client.build_request(
            spec.method, self.url, headers=self.headers, content=spec.body, extensions=extensions
        )
        while True:
            response = await send_bounded(client, request, spec.max_body)
            release_response(response)
            follow = response.next_request
            if follow is None or not spec.follow_redirects:
                return response
            if self.redirects == spec.max_redirects:
                raise TooManyRedirects(self.redirects)
            self.redirects += 1
            trace = RequestTrace()
            traces.append(trace)
            extensions = {"trace": trace}
            # The name override is the original host's; httpx already set Host for another.
            if self.sni and follow.url.host == request.url.host:
                extensions["sni_hostname"] = self.sni
            follow.extensions = extensions
            request = follow

    async def aclose(self) -> None:
        await self.client.aclose()


class H11Target(H11Client):
    """A plain ``http://`` target: its own keep-alive connection, which carries the target's
    request (encoded once, sent every probe). The client itself, not a wrapper round it: one
    object and one coroutine frame fewer per target and probe."""

    __slots__ = ()

    #: Redirects followed: none, ever (``follow_redirects`` takes the httpx path).
    redirects: int = 0


_USER_AGENT = b"trioprobe"
# Methods whose empty body httpx announces with Content-Length: 0, as the h11 path does.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def h11_target(
    target: str,
    spec: RequestSpec,
    headers: Mapping[str, str],
    *,
    host: str = "",
    authorization: str | None = None,
) -> H11Target | None:
    """The h11 path's state for a plain ``http://`` target; None for one the httpx path takes
    (https, user:password@ in the URL, or a URL httpx will reject with its own words).

    ``headers`` are the configured ones, ``host`` the ``Host`` override (the ``host`` option).
    """
    try:
        url = httpx.URL(target)
    except httpx.InvalidURL:
        return None
    if url.scheme != "http" or not url.host or url.userinfo:
        return None  # https, or credentials in the URL: httpx's own rules apply
    netloc = url.netloc.decode("ascii")
    if host:
        netloc = host if url.port is None else f"{host}:{url.port}"
    # httpx's defaults, less Accept-Encoding (the h11 path does not ask for compression) and
    # with its own User-Agent; configured headers override.
    given = {name.lower() for name in headers}
    raw = [(b"Host", netloc.encode("ascii"))]
    raw += [
        (name, value)
        for name, value in ((b"Accept", b"*/*"), (b"User-Agent", _USER_AGENT))
        if name.decode().lower() not in given
    ]
    raw += [(k.encode("ascii"), v.encode("ascii")) for k, v in headers.items()]
    if authorization is not None:
        raw.append((b"Authorization", authorization.encode("ascii")))
    body = spec.body
    if (body or spec.method in _BODY_METHODS) and "content-length" not in given:
        raw.append((b"Content-Length", str(len(body or b"")).encode("ascii")))
    return H11Target(
        url.host,
        url.port or 80,
        url.raw_path,
        spec.max_body,
        method=spec.method.encode("ascii"),
        headers=raw,
        body=body,
    )
