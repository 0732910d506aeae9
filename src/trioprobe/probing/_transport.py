"""The Prober's connections: one :class:`Transport` per probe id, one connection per endpoint.

Why apart from :mod:`.prober`: the scheduling (ticks, SRTT, records) does not depend on how a
reply is fetched, and each endpoint's transport is chosen once, when its id starts; both ways
return the same :class:`~trioprobe._exchange.Exchange` and raise httpx's exception classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from .._exchange import Exchange, from_httpx
from .._httpbody import send_bounded
from .._httptrace import RequestTrace, release_response
from .._lean_http import H11Client
from .._tls import ssl_context

__all__ = ["Transport"]


class Transport:
    """The connections of one probe id, one per endpoint, chosen when the id starts.

    A plain ``http://`` endpoint, when the caller passed no client, goes over a keep-alive
    connection on a raw socket, the ``http`` probe type's lean client
    (:class:`~trioprobe._lean_http.H11Client`): httpx's layers cost about a millisecond per
    request, and even Trio's stream layer and h11 half a millisecond, and that time landed in
    every RTT sample, inflating SRTT and ``clock_diff`` with this process's own overhead.
    https (and credentials in the URL) stay on httpx, as does everything when the caller gave a
    client: it may carry a transport, proxy or certificates the lean path knows nothing about.
    """

    __slots__ = ("_client", "_endpoints", "_owned", "lean")

    def __init__(self, endpoints: Sequence[httpx.URL], client: httpx.AsyncClient | None) -> None:
        self._endpoints = endpoints
        self._client = client
        self._owned = False
        self.lean: tuple[H11Client | None, ...] = tuple(
            _lean_endpoint(url) if client is None else None for url in endpoints
        )

    def client(self) -> httpx.AsyncClient:
        """The httpx client, created on first use: an id probing only http:// peers has none."""
        if self._client is None:
            # A client per id: each has at most one request in flight, which sidesteps
            # httpcore's pool slowdown when many tasks share one pool (httpx #3215).
            # timeout=None: the deadline is the per-probe cancel scope, not httpx's 5 s.
            # open_prober loaded the shared SSL context in a thread: this costs tens of µs.
            self._client = httpx.AsyncClient(verify=ssl_context(), timeout=None)
            self._owned = True
        return self._client

    async def get(self, index: int) -> Exchange:
        """GET endpoint ``index``, its reply read in full (under the probes' body limit: a 1 GiB
        reply must not fill the memory); an ``httpx.HTTPError`` (the h11 path's typed errors
        are httpx's classes) or ``UnicodeError`` (a bad host name) on failure."""
        lean = self.lean[index]
        if lean is not None:
            return await lean.exchange()
        client = self.client()
        trace = RequestTrace()
        request = client.build_request("GET", self._endpoints[index], extensions={"trace": trace})
        response = await send_bounded(client, request)
        release_response(response)
        return from_httpx(response, [trace])

    async def aclose(self) -> None:
        for endpoint in self.lean:
            if endpoint is not None:
                await endpoint.aclose()
        if self._owned and self._client is not None:
            await self._client.aclose()


_USER_AGENT = b"trioprobe"


def _lean_endpoint(url: httpx.URL) -> H11Client | None:
    """A plain http:// endpoint's keep-alive connection for its GET; None for the httpx path."""
    if url.scheme != "http" or not url.host or url.userinfo:
        return None  # https, or credentials in the URL: httpx's own rules apply
    headers = [(b"Host", url.netloc), (b"Accept", b"*/*"), (b"User-Agent", _USER_AGENT)]
    client = H11Client(url.host, url.port or 80, url.raw_path, headers=headers)
    client.request_bytes()  # encoded now, not in the first RTT sample
    return client
