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
from collections.abc import Awaitable, Callable
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

__all__ = ["demo_app", "run_demo", "serve_demo_dns", "serve_echo"]

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


def demo_config(
    http_url: str, health_url: str, zmq_addr: str, echo_addr: str, dns_addr: str
) -> dict[str, Any]:
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
        ],
        "surfacer": [{"type": "prometheus", "port": 0}],
    }


async def run_demo(
    args: argparse.Namespace,
    run_config: Callable[[Config, argparse.Namespace, str], Awaitable[int]],
) -> int:
    async with trio.open_nursery() as nursery:
        http_url = await nursery.start(serve_asgi, demo_app)
        health_url = await nursery.start(serve_health)
        zmq_addr = await nursery.start(RouterServer("tcp://127.0.0.1:0", workers=4).run)
        echo_addr = await nursery.start(serve_echo)
        dns_addr = await nursery.start(serve_demo_dns)
        config = parse_config(demo_config(http_url, health_url, zmq_addr, echo_addr, dns_addr))
        status = await run_config(config, args, "trioprobe demo")
        nursery.cancel_scope.cancel()
    return status
