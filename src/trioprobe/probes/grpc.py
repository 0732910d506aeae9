"""The ``grpc`` probe type: the standard gRPC health check, ``grpc.health.v1.Health/Check``.

gRPC's own Python package runs on asyncio or threads, so this speaks the protocol itself: one
HTTP/2 stream (the ``h2`` state machine) over a Trio TCP or TLS stream, a fresh connection per
probe as blackbox_exporter's grpc module makes. The request is the length-prefixed
``HealthCheckRequest{service}`` protobuf, written by hand: two fields do not need a protobuf
runtime.

Each probe reports its phases (``connect_latency``, ``tls_handshake_duration``,
``response_latency``: from the request sent to the reply's end), the reply's serving status in the
``serving_status`` map (``SERVING``, ``NOT_SERVING``, ``UNKNOWN``, ``SERVICE_UNKNOWN``) and the
call's ``grpc-status`` in the ``grpc_status`` map (its canonical code names; anything else is
``other``), so the label sets stay fixed. A probe succeeds only with ``grpc-status`` 0 and
``SERVING``. A server that answers ``NOT_FOUND`` (what the health service says of a service it
does not know) is reported as ``SERVICE_UNKNOWN``. Failures are counted in the ``errors`` map
under one fixed cause, as the tcp type does.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from .._tls import client_context, load_ssl_context
from .._varint import encode_varint, read_fields
from ..failures import Phase
from ..metrics import Distribution, Map
from . import TargetsFn
from ._net import (
    at_least,
    check_target_host,
    describe_error,
)
from ._stepped import StepFailure, SteppedProbe, Steps, connect

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = [
    "CAUSES",
    "GRPC_CODES",
    "SERVING_STATUSES",
    "GRPCProbe",
    "Options",
    "check_target",
    "decode_health_response",
    "encode_health_request",
    "make_probe",
]

#: The keys of the ``errors`` map, fixed so the exported label set is bounded.
CAUSES = (
    "refused",
    "timeout",
    "dns",
    "tls",
    "protocol",
    "closed",
    "grpc_status",
    "not_serving",
    "other",
)

#: ``grpc.health.v1.HealthCheckResponse.ServingStatus``, by enum number.
SERVING_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")

#: gRPC's canonical status codes, by number (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
GRPC_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_NOT_FOUND = 5

_PATH = b"/grpc.health.v1.Health/Check"
#: A health reply is a few bytes; anything past this is not one.
_MAX_REPLY_BYTES = 64 * 1024


@attrs.frozen
class Options:
    """Config keys of a ``grpc`` probe."""

    #: The service to ask about; "" asks about the server as a whole.
    service: str = ""
    #: Port for targets given without one.
    port: int | None = None
    #: Connect over TLS (ALPN ``h2``).
    tls: bool = False
    #: Verify the server's certificate (and its name) when ``tls`` is on.
    verify_tls: bool = True
    #: CA bundle (PEM) to verify against instead of the system's.
    ca_file: str | None = None
    #: TLS server name (SNI and verification); default: the target's host.
    server_name: str | None = None
    #: The ``:authority`` sent; default: the target as written.
    authority: str | None = None
    #: Reply bytes accepted before the reply counts as malformed.
    max_reply_bytes: int = attrs.field(default=_MAX_REPLY_BYTES, validator=at_least(16))


class _ProtocolError(Exception):
    """The peer broke the gRPC-over-HTTP/2 protocol (a non-200 status, a wrong content type...)."""


class _Closed(Exception):
    """The connection or the stream ended before the call completed."""


def encode_health_request(service: str) -> bytes:
    """The gRPC message (5-byte prefix + protobuf) of ``HealthCheckRequest{service}``."""
    payload = b""
    if service:
        name = service.encode()
        payload = b"\x0a" + encode_varint(len(name)) + name
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def decode_health_response(message: bytes) -> int:
    """The ``status`` field of a length-prefixed ``HealthCheckResponse`` (0 when absent).

    Raises ``ValueError`` for a compressed, truncated or malformed message. Unknown fields are
    skipped, as protobuf readers must.
    """
    if len(message) < 5:
        raise ValueError(f"reply of {len(message)} bytes is shorter than a gRPC message prefix")
    if message[0] != 0:
        raise ValueError("reply is compressed, which the request did not allow")
    length = int.from_bytes(message[1:5], "big")
    payload = message[5:]
    if len(payload) != length:
        raise ValueError(f"reply prefix says {length} bytes, got {len(payload)}")
    status = 0
    try:
        for number, _wire, value in read_fields(payload):
            if number == 1 and isinstance(value, int):  # a varint, the only int
                status = value
    except ValueError as exc:
        raise ValueError(f"reply: {exc}") from None
    return status


@attrs.define
class _Call(Steps):
    """What one call got through so far, with what the server said of it."""

    grpc_status: int | None = None
    grpc_message: str = ""
    serving: int | None = None


class GRPCProbe(SteppedProbe[Options]):
    """Asks each ``host:port`` target's health service, over a fresh connection per interval."""

    causes = CAUSES

    def __init__(
        self, options: Options, targets: TargetsFn, *, interval: float, timeout: float
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        self._request = encode_health_request(options.service)

    def _wants_tls(self) -> bool:
        return self.options.tls

    def _ssl_context(self) -> ssl.SSLContext:
        # Our own context: ALPN must say h2, and a CA file may be given.
        return client_context(
            ca_file=self.options.ca_file, verify=self.options.verify_tls, alpn=["h2"]
        )

    async def _prepare_tls(self) -> None:
        # Warm the shared context too: the first build of either costs tens of ms.
        await load_ssl_context(self.options.verify_tls)
        await super()._prepare_tls()

    def _new_steps(self) -> _Call:
        return _Call()

    def _extras(self, steps: Steps) -> dict[str, Distribution | Map]:
        assert isinstance(steps, _Call)
        serving = steps.serving
        extras: dict[str, Distribution | Map] = {
            "serving_status": _counted(
                "status", SERVING_STATUSES, _serving_name(serving) if serving is not None else None
            )
        }
        if steps.grpc_status is not None:
            code = steps.grpc_status
            name = GRPC_CODES[code] if 0 <= code < len(GRPC_CODES) else "other"
            extras["grpc_status"] = _counted("code", (*GRPC_CODES, "other"), name)
        return extras

    async def _walk(self, target: str, steps: Steps) -> StepFailure | None:
        assert isinstance(steps, _Call)
        try:
            return await self._call(target, steps)
        except _ProtocolError as exc:
            return StepFailure("protocol", f"{steps.step}: {exc}")
        except _Closed as exc:
            return StepFailure("closed", f"{steps.step}: {exc}")
        except h2.exceptions.H2Error as exc:
            return StepFailure("protocol", f"{steps.step}: HTTP/2: {describe_error(exc)}")

    async def _call(self, target: str, call: _Call) -> StepFailure | None:
        connected = await connect(target, self.options.port, call)
        if isinstance(connected, StepFailure):
            return connected
        host = connected[0]
        stream: trio.abc.Stream = connected[1]
        try:
            t1 = trio.current_time()
            if self._ssl is not None:
                call.step, call.phase = "tls handshake", Phase.TLS
                tls = trio.SSLStream(
                    stream, self._ssl, server_hostname=self.options.server_name or host
                )
                stream = tls
                await tls.do_handshake()
                if tls.selected_alpn_protocol() != "h2":
                    raise _ProtocolError("the server did not agree to HTTP/2 (ALPN h2)")
                t2 = trio.current_time()
                call.timings["tls_handshake_duration"] = t2 - t1
            authority = self.options.authority or target
            call.step, call.phase = "response", Phase.WAIT
            t_sent = trio.current_time()
            message = await self._exchange(stream, authority, call)
            call.timings["response_latency"] = trio.current_time() - t_sent
        finally:
            await trio.aclose_forcefully(stream)
        return self._verdict(message, call)

    def _verdict(self, message: bytes, call: _Call) -> StepFailure | None:
        code = call.grpc_status
        if code == _NOT_FOUND:
            call.serving = SERVING_STATUSES.index("SERVICE_UNKNOWN")
        if code != 0:
            name = GRPC_CODES[code] if code is not None and 0 <= code < len(GRPC_CODES) else code
            detail = f": {call.grpc_message[:200]}" if call.grpc_message else ""
            return StepFailure("grpc_status", f"response: grpc-status {name}{detail}")
        try:
            call.serving = decode_health_response(message)
        except ValueError as exc:
            raise _ProtocolError(str(exc)) from None
        if call.serving != 1:
            return StepFailure("not_serving", f"response: {_serving_name(call.serving)}")
        return None

    async def _exchange(self, stream: trio.abc.Stream, authority: str, call: _Call) -> bytes:
        """Send the Check call on a new HTTP/2 connection; return the reply message's bytes.

        ``call.grpc_status`` and ``call.grpc_message`` are set from the trailers (or from the
        headers of a trailers-only reply).
        """
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        scheme = "https" if self._ssl is not None else "http"
        millis = max(1, int(self.timeout * 1000))
        conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", scheme),
                (":path", _PATH.decode()),
                (":authority", authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", f"{min(millis, 99_999_999)}m"),
                ("user-agent", "trioprobe-grpc"),
            ],
        )
        conn.send_data(stream_id, self._request, end_stream=True)
        await stream.send_all(conn.data_to_send())
        body = bytearray()
        first_bytes = b""
        spoke_http2 = False
        while True:
            data = await stream.receive_some(65536)
            if not data:
                if first_bytes and not spoke_http2:
                    # An HTTP/1.1 server answers the preface with a status line, which h2 holds
                    # as an unfinished frame: say what the peer is instead of "closed".
                    raise _ProtocolError(f"the server does not speak HTTP/2: {first_bytes!r}")
                raise _Closed("the server closed the connection before the reply ended")
            first_bytes = first_bytes or bytes(data[:40])
            for event in conn.receive_data(data):
                spoke_http2 = True
                if self._handle(event, stream_id, conn, call, body):
                    return bytes(body)
            pending = conn.data_to_send()
            if pending:
                await stream.send_all(pending)

    def _handle(
        self,
        event: h2.events.Event,
        stream_id: int,
        conn: h2.connection.H2Connection,
        call: _Call,
        body: bytearray,
    ) -> bool:
        """Fold one HTTP/2 event into ``call``/``body``; True once the reply has ended."""
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
            headers = _header_dict(event.headers)
            if headers.get(":status") != "200":
                raise _ProtocolError(f"HTTP status {headers.get(':status')}, not 200")
            if not headers.get("content-type", "").startswith("application/grpc"):
                raise _ProtocolError(
                    f"content-type {headers.get('content-type', '')[:60]!r} is not gRPC"
                )
            _read_status(headers, call)
        elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
            body += event.data
            if len(body) > self.options.max_reply_bytes:
                raise _ProtocolError(
                    f"reply larger than the {self.options.max_reply_bytes}-byte limit"
                )
            conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == stream_id:
            _read_status(_header_dict(event.headers), call)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
            if call.grpc_status is None:
                raise _ProtocolError("the reply ended without a grpc-status")
            return True
        elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
            raise _Closed(f"the server reset the stream (HTTP/2 error {event.error_code})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise _Closed(f"the server ended the connection (HTTP/2 GOAWAY {event.error_code})")
        return False


def _header_dict(headers: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:  # type: ignore[attr-defined]
        key = name.decode() if isinstance(name, bytes) else str(name)
        out[key] = value.decode() if isinstance(value, bytes) else str(value)
    return out


def _read_status(headers: dict[str, str], call: _Call) -> None:
    status = headers.get("grpc-status")
    if status is None:
        return
    try:
        call.grpc_status = int(status)
    except ValueError:
        raise _ProtocolError(f"grpc-status {status[:20]!r} is not a number") from None
    call.grpc_message = headers.get("grpc-message", "")


def _serving_name(number: int) -> str:
    if 0 <= number < len(SERVING_STATUSES):
        return SERVING_STATUSES[number]
    return "UNKNOWN"


def _counted(label: str, keys: tuple[str, ...], key: str | None) -> Map:
    # Every key present from the first result on, and the set fixed: bounded series.
    counts = dict.fromkeys(keys, 0)
    if key is not None:
        counts[key] = 1
    return Map(label, counts)


#: Raises ``ValueError`` for a target whose host cannot be resolved: the config check and
#: targets files reject it where it is written.
check_target = check_target_host


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> GRPCProbe:
    return GRPCProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
