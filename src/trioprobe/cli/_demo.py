"""``trioprobe demo``: the main job on an embedded default, with no external service.

It starts small servers in-process on loopback and probes them with the same runner, keepers and
surfacers a real config would use, so a newcomer sees live results at once: an HTTP server (the
``http`` probe), the etcd-style health endpoint (``etcd_probing``: SRTT and clock difference), an
in-memory log (``logping``), a ZeroMQ ROUTER server (``zmq``), a TCP echo server (``tcp``) and a
tiny DNS responder built with dnspython's message API (``dns``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import random
import socket
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio

from .._asgi import Receive, Scope, Send, answer_lifespan, send_response, serve_asgi
from ..config import Config, parse_config
from ..probing import serve_health
from ..zmqnet import RouterServer

__all__ = ["StoppableServer", "demo_app", "run_demo", "serve_demo_dns", "serve_echo"]

#: The one name the demo's DNS responder knows; any other name is NXDOMAIN.
DEMO_DNS_NAME = "demo.trioprobe.test."


async def demo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/`` answers at once, ``/slow`` after 5-50 ms, ``/flaky`` fails one request in five."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/slow":
        await trio.sleep(random.uniform(0.005, 0.05))
    if path == "/flaky" and random.random() < 0.2:
        await send_response(send, 503, b"unavailable (on purpose)\n")
    elif path in ("/", "/slow", "/flaky"):
        await send_response(send, 200, b"ok\n")
    else:
        await send_response(send, 404, b"not found\n")


async def _echo(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError):
        async for data in stream:
            await stream.send_all(data)


async def serve_echo(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """A TCP echo server on a free loopback port; ``started("127.0.0.1:PORT")``."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1")
        )
        task_status.started(f"127.0.0.1:{listeners[0].socket.getsockname()[1]}")


def _dns_answer(wire: bytes) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None  # not a DNS query: no answer, as a real server would
    response = dns.message.make_response(query)
    question = query.question[0] if query.question else None
    if question is None or question.name.to_text().lower() != DEMO_DNS_NAME:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1"))
    return response.to_wire()


async def serve_demo_dns(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """A DNS responder on a free loopback UDP port answering A for :data:`DEMO_DNS_NAME`."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(f"127.0.0.1:{sock.getsockname()[1]}")
        while True:
            wire, address = await sock.recvfrom(4096)
            answer = _dns_answer(wire)
            if answer is not None:
                await sock.sendto(answer, address)


class StoppableServer:
    """A server of :func:`demo_app` that can be stopped (its port closes) and started again."""

    def __init__(self) -> None:
        self.url = ""
        self._scope = trio.CancelScope()
        self._start = trio.Event()

    def stop(self) -> None:
        self._scope.cancel()

    def start(self) -> None:
        self._start.set()

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        port = 0
        while True:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self.url = await nursery.start(serve_asgi, demo_app, "127.0.0.1", port)
                    port = int(self.url.rsplit(":", 1)[1])
                    task_status.started(self.url)
                    task_status = trio.TASK_STATUS_IGNORED
            self._scope = trio.CancelScope()
            await self._start.wait()
            self._start = trio.Event()


async def _with_control(
    stoppable: StoppableServer, scope: Scope, receive: Receive, send: Send
) -> None:
    # POST /stoppable/stop and /stoppable/start switch the `svc` probe's target off and on.
    if scope["type"] == "http" and scope["path"] in ("/stoppable/stop", "/stoppable/start"):
        if scope["method"] != "POST":
            await send_response(send, 405, b"use POST\n")
            return
        if scope["path"].endswith("stop"):
            stoppable.stop()
        else:
            stoppable.start()
        await send_response(send, 200, b"ok\n")
        return
    await demo_app(scope, receive, send)


def demo_config(
    http_url: str,
    health_url: str,
    zmq_addr: str,
    echo_addr: str,
    dns_addr: str,
    stoppable_url: str = "",
) -> dict[str, Any]:
    svc = [
        {
            "name": "svc",
            "type": "http",
            "targets": [f"{stoppable_url}/"],
            "interval": 0.5,
            "timeout": 0.4,
            "stats_interval": 2.0,
        }
    ]
    return {
        "shutdown_grace": 2.0,
        "probe": [
            {
                "name": "web",
                "type": "http",
                "targets": [f"{http_url}/", f"{http_url}/slow", f"{http_url}/flaky"],
                "interval": 0.5,
                "timeout": 0.4,
                "stats_interval": 2.0,
                "latency_unit": "ms",
                "latency_buckets": {"base": 2.0, "scale": 0.1, "count": 14},
                "body_regex": "ok",
            },
            {
                "name": "peer",
                "type": "etcd_probing",
                "targets": [health_url],
                "interval": 0.5,
                "timeout": 0.4,
                "stats_interval": 2.0,
            },
            {
                "name": "log",
                "type": "logping",
                "targets": ["memory"],
                "interval": 0.5,
                "stats_interval": 2.0,
            },
            {
                "name": "zmq",
                "type": "zmq",
                "targets": [zmq_addr],
                "interval": 0.5,
                "timeout": 0.4,
                "stats_interval": 2.0,
            },
            {
                "name": "echo",
                "type": "tcp",
                "targets": [echo_addr],
                "interval": 0.5,
                "timeout": 0.4,
                "stats_interval": 2.0,
                "query": "ping\n",
                "expect": "^ping",
            },
            {
                "name": "resolver",
                "type": "dns",
                "targets": [dns_addr],
                "interval": 0.5,
                "timeout": 0.4,
                "stats_interval": 2.0,
                "query_name": DEMO_DNS_NAME,
                "answer_regex": "^127\\.0\\.0\\.1$",
            },
            *(svc if stoppable_url else []),
        ],
        "surfacer": [{"type": "prometheus", "port": 0}],
        "status": {"port": 0, "refresh": 2},
        "alert": (
            [{"name": "svc-down", "probes": ["svc"], "repeat_interval": 60.0}]
            if stoppable_url
            else []
        ),
    }


async def run_demo(
    args: argparse.Namespace,
    run_config: Callable[[Config, argparse.Namespace, str], Awaitable[int]],
) -> int:
    async with trio.open_nursery() as nursery:
        stoppable = StoppableServer()
        stoppable_url = await nursery.start(stoppable.run)
        http_url = await nursery.start(serve_asgi, partial(_with_control, stoppable))
        health_url = await nursery.start(serve_health)
        zmq_addr = await nursery.start(RouterServer("tcp://127.0.0.1:0", workers=4).run)
        echo_addr = await nursery.start(serve_echo)
        dns_addr = await nursery.start(serve_demo_dns)
        data = demo_config(http_url, health_url, zmq_addr, echo_addr, dns_addr, stoppable_url)
        # History in a temporary store, gone with the demo (docs/history.md).
        history_dir = tempfile.TemporaryDirectory(prefix="trioprobe-demo-")
        data["history"] = {"path": str(Path(history_dir.name) / "history.sqlite")}
        config = parse_config(data)
        print(
            f"stop the 'svc' target with: curl -X POST {http_url}/stoppable/stop "
            "(start it again: .../stoppable/start)",
            flush=True,
        )
        try:
            status = await run_config(config, args, "trioprobe demo")
        finally:
            history_dir.cleanup()
        nursery.cancel_scope.cancel()
    return status
