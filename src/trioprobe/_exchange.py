"""What one HTTP probe exchange gave, whichever transport carried it.

Both client transports (httpx, and the h11 path of :mod:`trioprobe._lean_http`) return an
:class:`Exchange`: the response (status, headers, body) read in full, the phase times, how many
connections it opened, and the TLS facts of the connection it ended on. The validators
(:mod:`trioprobe.probes._http_checks`), the ``http`` probe's verdict and the Prober read it,
and nothing else: none of them knows which transport ran, and no transport's response type is
rebuilt from another's.
"""

from __future__ import annotations

import codecs
import email.message
import functools
from collections.abc import Mapping

import attrs
import httpx

from ._httpbody import MAX_BODY_BYTES, decode_body
from ._httptrace import RequestTrace, TLSInfo

__all__ = ["Exchange", "from_httpx"]

_NO_PHASES: Mapping[str, float] = {}


@attrs.define(eq=False)
class Exchange:
    """A response read in full, and how it was obtained (not changed once returned; not
    ``frozen`` only because a frozen class's ``__init__`` costs a few µs more per probe).

    ``body`` is as received; with ``decode_pending`` it may still carry its
    ``Content-Encoding`` (the h11 path asks for no compression, so it decodes only a body a
    server compressed unasked, and only when a validator reads it: :meth:`decoded`).
    """

    status: int
    #: The reason phrase, decoded as httpx decodes it (ASCII, undecodable bytes dropped).
    reason: str
    #: The header fields as received, in order (names in their original case).
    headers: list[tuple[bytes, bytes]]
    body: bytes
    #: Seconds per phase that happened: ``connect`` and ``tls`` (only when a connection was
    #: opened), ``send``, ``ttfb``, ``transfer``; summed over the redirects followed.
    phases: Mapping[str, float] = _NO_PHASES
    #: Requests sent (1 + the redirects followed) and the connections they opened.
    requests: int = 1
    new_connections: int = 1
    #: Whether the last request opened its connection (the first probe, or after a close).
    new_connection: bool = True
    #: The TLS facts of the connection the last request went over; None for plain HTTP.
    tls: TLSInfo | None = None
    #: Whether ``body`` is still as sent, its ``Content-Encoding`` not undone yet.
    decode_pending: bool = False

    @property
    def redirects(self) -> int:
        """Redirects followed to get this response."""
        return self.requests - 1

    @property
    def setup_time(self) -> float:
        """Seconds spent opening connections (connect + TLS); 0 when all were reused."""
        phases = self.phases
        return phases.get("connect", 0.0) + phases.get("tls", 0.0)

    def decoded(self, limit: int = MAX_BODY_BYTES) -> Exchange:
        """This exchange with ``body`` decoded (at most ``limit`` bytes: else
        ``BodyTooLarge``; ``httpx.DecodingError`` for a body that is not what it says); itself
        when there was nothing to undo (no ``Content-Encoding``, or one that is kept as sent)."""
        if not self.decode_pending:
            return self
        body = decode_body(self.body, self.header(b"content-encoding") or "", limit)
        if body is self.body:
            return self
        return attrs.evolve(self, body=body, decode_pending=False)

    def header(self, name: bytes) -> str | None:
        """The value of the header ``name`` (given in lower case), several fields joined with
        ``", "`` as httpx joins them; None when there is none. Read from :attr:`headers`
        directly: the checks of every probe ask for one or two, and :meth:`header_view` costs
        ~25 calls to build."""
        values = [value for key, value in self.headers if key.lower() == name]
        if not values:
            return None
        return ", ".join(map(_header_text, values))

    def header_view(self) -> httpx.Headers:
        """The headers as a case-insensitive multi-map (decoded as httpx decodes them)."""
        return httpx.Headers(self.headers)

    def text(self) -> str:
        """The body as text, decoded as ``httpx.Response.text`` does: the ``Content-Type``
        charset if Python knows it, else UTF-8, undecodable bytes replaced."""
        if not self.body:
            return ""
        encoding = _charset(self.header(b"content-type")) or "utf-8"
        return self.body.decode(encoding, errors="replace")


def _header_text(value: bytes) -> str:
    # As httpx.Headers decodes: ASCII, else UTF-8, else Latin-1 (which decodes any bytes).
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        pass
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("iso-8859-1")


@functools.lru_cache(maxsize=256)
def _charset(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    message = email.message.Message()
    message["content-type"] = content_type
    charset = message.get_content_charset(failobj=None)
    if charset is None:
        return None
    try:
        codecs.lookup(charset)
    except LookupError:
        return None
    return charset


def from_httpx(
    response: httpx.Response, traces: list[RequestTrace], tls: TLSInfo | None = None
) -> Exchange:
    """The :class:`Exchange` of an httpx response already read, and the traces of its
    requests (one per redirect followed, the last one the response's own)."""
    last = traces[-1]
    if len(traces) == 1:  # no redirect: the common case, kept cheap
        phases = last.phases()
        new = int(last.new_connection)
    else:
        phases = {}
        for trace in traces:
            for phase, seconds in trace.phases().items():
                phases[phase] = phases.get(phase, 0.0) + seconds
        new = sum(trace.new_connection for trace in traces)
    return Exchange(
        response.status_code,
        response.reason_phrase,
        response.headers.raw,
        response.content,
        phases,
        requests=len(traces),
        new_connections=new,
        new_connection=last.new_connection,
        tls=tls,
    )
