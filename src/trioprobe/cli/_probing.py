"""``trioprobe serve health``: serve etcd's ``/raft/probing`` health reply."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import trio

from .._groups import leaves
from ..probing import serve_health
from ..probing.health import DEFAULT_PATH
from ..validators import PORT
from ._common import CLIError, positive_seconds

__all__ = ["register"]


def register(
    subparsers: argparse._SubParsersAction[Any], serve_subparsers: argparse._SubParsersAction[Any]
) -> None:
    """Add ``serve health``."""
    health = serve_subparsers.add_parser(
        "health",
        help='serve etcd\'s health reply ({"OK":true,"Now":...}) for probers to measure',
        description=(
            "Serve the health endpoint etcd peers serve at /raft/probing, so an etcd-style "
            "prober (trioprobe's etcd_probing or etcd itself) can measure round-trip time and "
            "clock difference against this host. Stops on Ctrl-C or SIGTERM."
        ),
    )
    health.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    health.add_argument(
        "--port", type=PORT.parse, default=0, help="port to bind (default 0: any free port)"
    )
    health.add_argument(
        "--path", default=DEFAULT_PATH, help=f"path of the endpoint (default {DEFAULT_PATH})"
    )
    health.add_argument(
        "--duration",
        type=positive_seconds,
        default=None,
        help="stop by itself after this many seconds",
    )
    health.set_defaults(func=_cmd_serve_health)


def _cmd_serve_health(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be between 0 and 65535, got {args.port}")
    if not args.path.startswith("/"):
        raise CLIError(f"--path must start with '/', got {args.path!r}")
    if args.duration is not None and args.duration <= 0:
        raise CLIError(f"--duration must be positive, got {args.duration}")
    try:
        trio.run(_serve, args.host, args.port, args.path, args.duration)
    except* OSError as group:
        # The command's own nursery wraps serve_health's error in a group: report each one.
        raise CLIError(
            *(
                f"cannot serve on {args.host}:{args.port}: {error.strerror or error}"
                for error in leaves(group)
            )
        ) from None
    return 0


async def _serve(host: str, port: int, path: str, duration: float | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve_health(host, port, path=path, task_status=task_status)
            )
            print(f"serving health on {url}", flush=True)
            if duration is not None:
                nursery.cancel_scope.deadline = trio.current_time() + duration
            async for _ in signals:
                print("stopping", file=sys.stderr, flush=True)
                nursery.cancel_scope.cancel()
                break
