"""Phase timings of one HTTP request, from httpx's ``trace`` request extension.

httpcore calls the ``trace`` callback at the start and end of each step of a request
(``connection.connect_tcp.started``, ``http11.send_request_headers.complete``, ...). A
:class:`RequestTrace` notes the time of each, and turns them into the phases blackbox_exporter
reports: connect (DNS + TCP), TLS handshake, sending the request, waiting for the first byte of
the reply (server processing) and reading the body. A reused keep-alive connection has no
connect and TLS steps: that is also how a probe tells new connections from reused ones.

:func:`release_response` is the other thing a probe does around each request: it frees the
response without leaving work for the cyclic garbage collector.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx
import trio

from ._phases import Phase, enter_phase

__all__ = ["PHASES", "RequestTrace", "TLSInfo", "release_response", "tls_info"]

#: Phase names, in the order they happen.
PHASES = ("connect", "tls", "send", "ttfb", "transfer")

# The failure phase a request is in from each event on (see trioprobe.failures).
_PHASE_AT = {
    "connect_tcp.started": Phase.CONNECT,
    "start_tls.started": Phase.TLS,
    "send_request_headers.started": Phase.SEND,
    "send_request_body.complete": Phase.WAIT,
    "receive_response_headers.complete": Phase.RECEIVE,
}

# (phase, first event, last event), event names without their "connection."/"http11." prefix.
_SPANS = (
    ("connect", "connect_tcp.started", "connect_tcp.complete"),
    ("tls", "start_tls.started", "start_tls.complete"),
    ("send", "send_request_headers.started", "send_request_body.complete"),
    ("ttfb", "send_request_body.complete", "receive_response_headers.complete"),
    ("transfer", "receive_response_body.started", "receive_response_body.complete"),
)


class RequestTrace:
    """Pass as ``extensions={"trace": trace}``; read :meth:`phases` once the response is read.

    One per request. It costs a dict store per event (about ten per request).
    """

    __slots__ = ("marks", "ssl_object")

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        #: The TLS connection's ``ssl.SSLObject`` when this request opened one.
        self.ssl_object: ssl.SSLObject | None = None

    async def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        step = event.partition(".")[2]
        self.marks[step] = trio.current_time()
        phase = _PHASE_AT.get(step)
        if phase is not None:
            enter_phase(phase)  # so a deadline in this step is blamed on it (trioprobe.failures)
        if event == "connection.start_tls.complete":
            stream = info.get("return_value")
            if stream is not None:
                self.ssl_object = stream.get_extra_info("ssl_object")

    @property
    def new_connection(self) -> bool:
        """Whether the request opened a connection (rather than reusing a kept-alive one)."""
        return "connect_tcp.started" in self.marks

    def setup_time(self) -> float:
        """Seconds spent opening the connection (connect + TLS); 0 on a reused connection."""
        marks = self.marks
        total = 0.0
        for _, start, end in _SPANS[:2]:
            if start in marks and end in marks:
                total += marks[end] - marks[start]
        return total

    def phases(self) -> dict[str, float]:
        """Seconds per phase, for the phases that completed (no connect/TLS when reused)."""
        marks = self.marks
        return {
            phase: marks[end] - marks[start]
            for phase, start, end in _SPANS
            if start in marks and end in marks
        }


class TLSInfo:
    """What a probe reports about a TLS connection, as blackbox_exporter does."""

    __slots__ = ("earliest_expiry", "version")

    def __init__(self, version: str, earliest_expiry: int | None) -> None:
        #: e.g. ``"TLS 1.3"`` (blackbox's ``probe_tls_version_info`` spelling).
        self.version = version
        #: The peer certificate's ``notAfter`` in seconds since the epoch; None when the
        #: certificate was not verified (``verify_tls = false``: Python then does not decode it).
        self.earliest_expiry = earliest_expiry


def tls_info(ssl_object: ssl.SSLObject) -> TLSInfo:
    """Version and certificate expiry of an established TLS connection.

    Python 3.11 exposes only the leaf certificate in decoded form, so the expiry is the leaf's;
    blackbox takes the earliest over the chain, which differs only when an intermediate expires
    first.
    """
    version = (ssl_object.version() or "unknown").replace("TLSv", "TLS ")
    cert = ssl_object.getpeercert()
    expiry = None
    if cert and isinstance(cert.get("notAfter"), str):
        expiry = int(ssl.cert_time_to_seconds(str(cert["notAfter"])))
    return TLSInfo(version, expiry)


_NO_STREAM = httpx.ByteStream(b"")


def release_response(response: httpx.Response) -> None:
    """Drop a read response's link to its stream, so the pair is freed by reference counting.

    httpx binds each response and its stream to each other (the ``BoundAsyncStream`` holds the
    response), so every request left ~36 objects of cyclic garbage that only the cyclic collector
    can free. At hundreds of probes per second, requests in flight across collections promote
    that garbage to the oldest generation, whose full passes then took 70-150 ms of CPU every
    couple of seconds with 1,000 targets: the event loop's longest stalls. The body has been read
    (``response.content`` keeps it), so the stream is no longer needed.
    """
    response.stream = _NO_STREAM
