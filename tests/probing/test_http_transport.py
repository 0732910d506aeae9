"""The http probe's transport: shared SSL context off the loop, first probes, phases, TLS, SRTT.

Real-socket tests use loopback servers and are bounded by progress (``fail_after`` is only a
hang guard); the stall test is deterministic: it checks *where* the expensive builds happen.
"""

from __future__ import annotations

import datetime
import ssl
import threading
import time
from functools import partial
from typing import Any

import h11
import httpx
import pytest
import trio
import trustme

from trioprobe import _tls
from trioprobe.metrics import Distribution, Map
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.probing import ProbeRecord, open_prober
from trioprobe.probing.health import format_rfc3339_nano
from trioprobe.probing.prober import ALPHA
from trioprobe.results import ProbeResult

# -- the stall test: builds are off the loop and outside deadlines ----------------------------


async def test_ssl_context_built_in_a_thread_and_clients_outside_deadlines(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Adding 1,000 targets never builds an SSL context on the event loop, never builds a client
    inside a probe's deadline, and builds the clients at the targets' spread first ticks instead
    of in one scheduler batch (which is what stalled the loop for seconds)."""
    monkeypatch.setattr(_tls, "_contexts", {})
    build_threads: list[threading.Thread] = []
    real_build = _tls._build

    def recording_build(verify: bool) -> ssl.SSLContext:
        build_threads.append(threading.current_thread())
        return real_build(verify)

    monkeypatch.setattr(_tls, "_build", recording_build)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    builds: list[tuple[float, float]] = []  # (time, effective deadline) of each client build
    targets = [f"http://h{i}.example/" for i in range(1000)]
    real_default = HTTPProbe._default_client

    def default_client(self: HTTPProbe) -> httpx.AsyncClient:
        builds.append((trio.current_time(), trio.current_effective_deadline()))
        client = real_default(self)  # the real build, with the shared context
        # ...but answered by a mock transport: this test is about where the build happens.
        client._transport = httpx.MockTransport(handler)
        return client

    monkeypatch.setattr(HTTPProbe, "_default_client", default_client)
    # transport="httpx": this test is about httpx clients (the lean path builds none).
    probe = HTTPProbe(Options(transport="httpx"), lambda: targets, interval=5.0, timeout=1.0)
    send, receive = trio.open_memory_channel[ProbeResult](10_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run, send)
        assert build_threads, "the SSL context was not loaded before the probe reported ready"
        assert all(t is not threading.main_thread() for t in build_threads)
        await trio.sleep(5.01)
        nursery.cancel_scope.cancel()
    assert len(builds) == 1000
    assert all(deadline == float("inf") for _, deadline in builds)
    # At most a handful of builds share an instant: they are spread over the interval.
    per_instant: dict[float, int] = {}
    for when, _ in builds:
        per_instant[round(when, 6)] = per_instant.get(round(when, 6), 0) + 1
    assert max(per_instant.values()) <= 3
    results = [receive.receive_nowait() for _ in range(1000)]
    assert all(r.success for r in results)


# -- a local HTTP(S) server (h11 over trio, keep-alive) ----------------------------------------


async def _serve_h11(stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                continue
            if isinstance(event, h11.EndOfMessage):
                body = b'{"OK":true,"Now":"%s"}' % format_rfc3339_nano(time.time_ns()).encode()
                headers = [("content-length", str(len(body)))]
                out = conn.send(h11.Response(status_code=200, headers=headers))
                out += conn.send(h11.Data(data=body))  # type: ignore[operator]
                out += conn.send(h11.EndOfMessage())  # type: ignore[operator]
                await stream.send_all(out)  # type: ignore[arg-type]
                conn.start_next_cycle()
                continue
            return
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return


@pytest.mark.parametrize("transport", ["auto", "httpx"])
async def test_first_probes_of_100_targets_with_a_short_timeout_do_not_time_out(
    transport: str,
) -> None:
    """The issue's example, 100 targets: first probes used to time out because every target built
    its client (and SSL context, 54-213 ms each) inside its deadline, all on one tick: seconds of
    stall for 100 targets. The issue's 0.2 s timeout is the benchmark's figure (part 3); here the
    timeout is 5 s, so a loaded machine cannot fail the test (2 s failed once beside CPU burners
    and a 5,000-target benchmark: 2.2 s latencies) while the old behaviour (every build inside
    the deadlines, one after another: 100 x 54-213 ms) still does. Where builds happen is
    checked deterministically by the stall test above."""
    async with trio.open_nursery() as servers:
        # The lean h11 server: it shares this event loop, and Hypercorn costs 3x the CPU.
        listeners = await servers.start(partial(trio.serve_tcp, _serve_h11, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/health"
        targets = [f"{url}?t={i}" for i in range(100)]
        probe = HTTPProbe(Options(transport=transport), lambda: targets, interval=1.0, timeout=5.0)
        send, receive = trio.open_memory_channel[ProbeResult](1000)
        firsts: dict[str, ProbeResult] = {}
        with trio.fail_after(60):  # a hang guard only
            async with trio.open_nursery() as nursery:
                await nursery.start(probe.run, send)
                async for result in receive:
                    firsts.setdefault(result.target, result)
                    if len(firsts) == 100:
                        break
                nursery.cancel_scope.cancel()
        servers.cancel_scope.cancel()
    timeouts = [r for r in firsts.values() if r.timeout]
    assert timeouts == [], [(r.latency, r.start_lateness) for r in timeouts]
    assert all(r.success for r in firsts.values()), [r.error for r in firsts.values()][:3]


# -- phases and TLS ---------------------------------------------------------------------------

NOT_AFTER = datetime.datetime(2031, 5, 17, 12, 0, 0, tzinfo=datetime.UTC)


async def test_https_target_reports_phases_tls_version_and_cert_expiry() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", not_after=NOT_AFTER)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async with trio.open_nursery() as servers:
        listeners = await servers.start(
            partial(trio.serve_ssl_over_tcp, _serve_h11, 0, server_ctx, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        target = f"https://127.0.0.1:{port}/"
        probe = HTTPProbe(
            Options(detail="full"),
            lambda: [target],
            interval=0.05,
            timeout=5.0,
            client_factory=lambda: httpx.AsyncClient(verify=client_ctx, timeout=None),
        )
        send, receive = trio.open_memory_channel[ProbeResult](100)
        results: list[ProbeResult] = []
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(probe.run, send)
                async for result in receive:
                    results.append(result)
                    if len(results) == 3:
                        break
                nursery.cancel_scope.cancel()
        servers.cancel_scope.cancel()

    assert all(r.success for r in results), [r.error for r in results]
    first, later = results[0], results[1:]
    # The first probe opened the connection: connect and TLS are phases of their own.
    assert set(first.extras) >= {
        "phase_connect",
        "phase_tls",
        "phase_send",
        "phase_ttfb",
        "phase_transfer",
    }
    assert first.extras["connections"] == Map("state", {"new": 1})
    tls = first.extras["phase_tls"]
    assert isinstance(tls, Distribution)
    assert tls.count == 1
    assert 0 < tls.sum < first.latency
    # Later probes reuse it: no connect/TLS phase, counted as reused.
    for result in later:
        assert "phase_tls" not in result.extras
        assert "phase_connect" not in result.extras
        assert result.extras["connections"] == Map("state", {"reused": 1})
    for result in results:
        assert str(result.gauges["tls_version"]).startswith("TLS 1.")
        assert result.gauges["cert_expiry"] == int(NOT_AFTER.timestamp())


# -- unbiased SRTT ----------------------------------------------------------------------------


async def _srtt_run(url: str, client: httpx.AsyncClient) -> tuple[float, list[float]]:
    """SRTT after 5 probes and the RTT samples of 12 probes of one fresh prober id."""
    send, receive = trio.open_memory_channel[ProbeRecord](100)
    rtts: list[float] = []
    srtts: list[float] = []
    async with open_prober(client, records=send) as prober:
        prober.add_http("p", 0.05, [url], timeout=5.0)
        async for record in receive:
            assert record.success, record.error
            rtts.append(record.rtt)
            srtts.append(record.srtt)
            if len(rtts) == 12:
                break
    return srtts[4], rtts


#: The server holds every new connection's TLS handshake this long: far longer than any probe's
#: round trip on loopback, however busy the machine, so a sample that counted the set-up shows.
SETUP_DELAY = 2.0


async def _slow_set_up(stream: trio.abc.Stream) -> None:
    await trio.sleep(SETUP_DELAY)  # the handshake happens on the first receive, after this
    await _serve_h11(stream)


async def test_srtt_excludes_the_connection_set_up() -> None:
    """The first sample excludes connection set-up (here TCP and a TLS handshake the server holds
    for SETUP_DELAY), so SRTT is not seeded too high; SRTT is then the a = 1/8 average of the
    samples. Neither verdict depends on how fast the machine is."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with trio.open_nursery() as servers:
        listeners = await servers.start(
            partial(trio.serve_ssl_over_tcp, _slow_set_up, 0, server_ctx, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        url = f"https://127.0.0.1:{port}/health"
        with trio.fail_after(60):
            async with httpx.AsyncClient(verify=client_ctx, timeout=None) as client:
                srtt, rtts = await _srtt_run(url, client)
        servers.cancel_scope.cancel()
    assert max(rtts) < SETUP_DELAY, rtts
    expected = rtts[0]
    for rtt in rtts[1:5]:
        expected = (1 - ALPHA) * expected + ALPHA * rtt
    assert srtt == pytest.approx(expected)
