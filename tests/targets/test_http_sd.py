"""http_sd against a local server speaking Prometheus's HTTP SD: the documented JSON, ETags,
a 500 (the last list is kept, the failure counted), then a new list."""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import pytest
import trio

from trioprobe.targets import HttpSDSource, ProbeTargets

from ._util import wait_for

# The example of Prometheus's documentation (http_sd.md).
PROMETHEUS_HTTP_SD = [
    {
        "targets": ["10.0.10.2:9100", "10.0.10.3:9100", "10.0.10.4:9100", "10.0.10.5:9100"],
        "labels": {"__meta_datacenter": "london", "__meta_prometheus_job": "node"},
    },
    {
        "targets": ["10.0.40.2:9100", "10.0.40.3:9100"],
        "labels": {"__meta_datacenter": "london", "__meta_prometheus_job": "alertmanager"},
    },
    {
        "targets": ["10.0.40.2:9093"],
        "labels": {"__meta_datacenter": "newyork", "__meta_prometheus_job": "alertmanager"},
    },
]
NEW_LIST = [{"targets": ["10.0.50.1:9100"], "labels": {"team": "db"}}]


class SDServer:
    """Answers each GET with the current plan: (status, body, etag); 304 on a matching ETag."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = PROMETHEUS_HTTP_SD
        self.etag = '"v1"'
        self.requests: list[dict[str, str]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        lines = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
        self.requests.append(headers)
        if self.status == 200 and headers.get("if-none-match") == self.etag:
            head, body = "304 Not Modified", b""
        elif self.status == 200:
            head, body = "200 OK", json.dumps(self.body).encode()
        else:
            head, body = f"{self.status} Oops", b"broken"
        await stream.send_all(
            f"HTTP/1.1 {head}\r\nContent-Type: application/json\r\nETag: {self.etag}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await stream.aclose()


async def _serve(nursery: trio.Nursery, server: SDServer) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}/sd"


async def test_http_sd_documented_shape_etag_500_then_new_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = SDServer()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await _serve(nursery, server)
            source = HttpSDSource(url, refresh_interval=0.05)
            targets = ProbeTargets("p", [source])
            await nursery.start(targets.run)
            assert len(targets()) == 7
            # Every label of the example is a __meta_ one: none is exported.
            assert targets.labels_of("10.0.40.2:9093") == {}
            assert dict(targets.snapshot.get("10.0.40.2:9093").labels)["__meta_datacenter"] == (
                "newyork"
            )
            await wait_for(lambda: source.not_modified >= 2)  # the same ETag: 304, no parse
            assert server.requests[-1]["if-none-match"] == '"v1"'
            state = targets.states[0]
            server.status = 500
            with caplog.at_level(logging.WARNING, logger="trioprobe.targets"):
                await wait_for(lambda: state.errors_total >= 5)
            assert len(targets()) == 7  # kept
            assert state.error == f"{url}: answered 500, expected 200"
            # Five failures in well under 10 s: one line.
            assert (
                sum("targets source http_sd failed" in r.getMessage() for r in caplog.records) == 1
            )
            generation = targets.snapshot.generation
            server.status, server.body, server.etag = 200, NEW_LIST, '"v2"'
            await targets.wait_changed(generation)
            assert targets() == ("10.0.50.1:9100",)
            assert targets.labels_of("10.0.50.1:9100") == {"team": "db"}
            assert state.error is None
            [errors] = [em for em in targets.collect() if em.label("source") == "http_sd"]
            assert errors.metrics["targets_source_errors"].value >= 5  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()


async def test_http_sd_down_at_start_has_no_targets_until_it_answers() -> None:
    server = SDServer()
    server.status = 503
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await _serve(nursery, server)
            targets = ProbeTargets("p", [HttpSDSource(url, refresh_interval=0.05)])
            await nursery.start(targets.run)
            assert targets() == ()
            assert targets.states[0].errors_total == 1
            server.status = 200
            await targets.wait_changed(0)
            assert len(targets()) == 7
            nursery.cancel_scope.cancel()
