"""The ``grpc`` probe type against a real gRPC server: grpcio with the standard health service.

grpcio serves from its own threads, so these tests run on real time; every wait is bounded by
the probe's own timeout, and no verdict depends on how fast the machine is (only a deliberately
silent server is expected to time out).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import trio
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from trioprobe.failures import Failure, FailureReason, Phase
from trioprobe.probes.grpc import (
    GRPCProbe,
    Options,
    decode_health_response,
    encode_health_request,
)
from trioprobe.results import ProbeResult

pytestmark = pytest.mark.real

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServer:
    """A grpcio server on loopback with the health service; ``set`` switches a service."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()
        self.set("", SERVING)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, service: str, status: int) -> None:
        self.servicer.set(service, status)

    def stop(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture
def server() -> Iterator[HealthServer]:
    served = HealthServer()
    yield served
    served.stop()


def probe(options: Options, timeout: float = 5.0) -> GRPCProbe:
    # A generous timeout: the verdicts below never depend on it, except the silent server's.
    return GRPCProbe(options, lambda: (), interval=1.0, timeout=timeout)


async def check(options: Options, target: str, probe_timeout: float = 5.0) -> ProbeResult:
    prober = probe(options, probe_timeout)
    if options.tls:
        prober._ssl = await trio.to_thread.run_sync(prober._ssl_context)
    return await prober.probe_once(target)


def served(result: ProbeResult) -> dict[str, int | float]:
    return {k: v for k, v in result.extras["serving_status"].values.items() if v}


def test_request_and_reply_codec_round_trip() -> None:
    request = encode_health_request("web")
    assert request == b"\x00\x00\x00\x00\x05\x0a\x03web"
    assert encode_health_request("") == b"\x00\x00\x00\x00\x00"
    reply = health_pb2.HealthCheckResponse(status=NOT_SERVING).SerializeToString()
    framed = b"\x00" + len(reply).to_bytes(4, "big") + reply
    assert decode_health_response(framed) == NOT_SERVING
    with pytest.raises(ValueError, match=r"truncated|prefix"):
        decode_health_response(framed[:-1])
    with pytest.raises(ValueError, match="compressed"):
        decode_health_response(b"\x01" + framed[1:])


async def test_serving_then_not_serving(server: HealthServer) -> None:
    ok = await check(Options(), server.target)
    assert ok.success, ok.error
    assert served(ok) == {"SERVING": 1}
    assert ok.extras["grpc_status"].values["OK"] == 1
    assert {"connect_latency", "response_latency"} <= set(ok.extras)
    # Step times are one-sample histograms (_sum and _count), never _seconds_total counters.
    assert ok.extras["response_latency"].count == 1  # type: ignore[union-attr]

    server.set("", NOT_SERVING)
    down = await check(Options(), server.target)
    assert not down.success
    assert served(down) == {"NOT_SERVING": 1}
    assert down.error == "response: NOT_SERVING"
    assert down.extras["errors"].values["not_serving"] == 1
    assert down.failure == Failure(FailureReason.HTTP_STATUS)  # the health status


async def test_a_named_service_and_an_unknown_one(server: HealthServer) -> None:
    server.set("shop.Cart", SERVING)
    assert (await check(Options(service="shop.Cart"), server.target)).success
    server.set("shop.Cart", NOT_SERVING)
    assert not (await check(Options(service="shop.Cart"), server.target)).success

    unknown = await check(Options(service="no.Such"), server.target)
    assert not unknown.success
    assert served(unknown) == {"SERVICE_UNKNOWN": 1}
    assert unknown.extras["grpc_status"].values["NOT_FOUND"] == 1
    assert unknown.error is not None
    assert "grpc-status NOT_FOUND" in unknown.error


async def test_tls_with_a_trusted_and_an_untrusted_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("grpc.test")
    key_pem = cert.private_key_pem.bytes()
    chain_pem = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    tls_server = HealthServer(grpc.ssl_server_credentials([(key_pem, chain_pem)]))
    try:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        options = Options(tls=True, ca_file=str(ca_file), server_name="grpc.test")
        ok = await check(options, tls_server.target)
        assert ok.success, ok.error
        assert "tls_handshake_duration" in ok.extras

        untrusted = await check(Options(tls=True, server_name="grpc.test"), tls_server.target)
        assert not untrusted.success
        assert untrusted.extras["errors"].values["tls"] == 1
        assert untrusted.failure == Failure(FailureReason.TLS_VERIFY)  # tls, refined
        assert untrusted.error is not None
        assert untrusted.error.startswith("tls handshake:")
    finally:
        tls_server.stop()


async def test_a_server_that_never_answers_times_out_in_the_response_step() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []

    async def accept_and_hold() -> None:
        accepted.append(await listener.accept())
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_hold)
        result = await check(Options(), f"127.0.0.1:{port}", probe_timeout=0.3)
        nursery.cancel_scope.cancel()
    for stream in accepted:
        await stream.aclose()
    await listener.aclose()
    assert not result.success
    assert result.timeout
    assert result.error == "response: timed out after 0.3s"
    assert result.extras["errors"].values["timeout"] == 1
    assert result.failure == Failure(FailureReason.TIMEOUT, Phase.WAIT)


async def test_a_plain_http_server_is_a_protocol_error() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]

    async def answer_http1() -> None:
        stream = await listener.accept()
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_http1)
        result = await check(Options(), f"127.0.0.1:{port}")
    await listener.aclose()
    assert not result.success
    assert result.extras["errors"].values["protocol"] == 1, result.error
    assert result.reason is FailureReason.PROTOCOL


async def test_a_refused_port_is_refused(server: HealthServer) -> None:
    port = server.port
    server.stop()
    result = await check(Options(), f"127.0.0.1:{port}")
    assert not result.success
    assert result.extras["errors"].values["refused"] == 1
    assert result.failure == Failure(FailureReason.CONNECT_REFUSED)
