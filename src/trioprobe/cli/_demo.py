"""``trioprobe demo``: the main job on an embedded default, with no external service.

It starts small servers in-process on loopback and probes them with the same runner, keepers and
surfacers a real config would use, so a newcomer sees live results at once: an HTTP server (the
``http`` probe), the etcd-style health endpoint (``etcd_probing``: SRTT and clock difference), an
in-memory log (``logping``) and a ZeroMQ ROUTER server (``zmq``).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._asgi import Receive, Scope, Send, answer_lifespan, send_response, serve_asgi
from ..config import Config, parse_config
from ..probing import serve_health
from ..zmqnet import RouterServer

__all__ = ["demo_app", "run_demo"]


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


def demo_config(http_url: str, health_url: str, zmq_addr: str) -> dict[str, Any]:
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
        config = parse_config(demo_config(http_url, health_url, zmq_addr))
        status = await run_config(config, args, "trioprobe demo")
        nursery.cancel_scope.cancel()
    return status
