"""``trioprobe logping LOG``: ping a log now and print its latency, without writing a config.

Meant for an operator asking "how is this etcd's (or file's) log doing right now": one line per
``--report`` seconds with the pings' outcomes and ping latency quantiles since the start.
"""

from __future__ import annotations

import argparse
import math
import signal
from typing import Any

import trio

from ..logping import Pinger, open_log, quantiles
from ..logping.logs import check_log_spec
from ..validators import COUNT
from ._common import CLIError, positive_seconds

__all__ = ["register"]


def register(
    subparsers: argparse._SubParsersAction[Any], serve_subparsers: argparse._SubParsersAction[Any]
) -> None:
    """Add ``logping``."""
    parser = subparsers.add_parser(
        "logping",
        help="ping a log (memory, file:PATH, etcd:URL) and print its append-to-read latency",
        description=(
            "Append ping entries to a log through one client, read them back through another, "
            "and print how long they took (Akutan's logping). LOG is 'memory', 'file:PATH' or "
            "'etcd:http://HOST:PORT'. Stops on Ctrl-C, SIGTERM or after --duration."
        ),
    )
    parser.add_argument("log", metavar="LOG", help="the log to ping")
    parser.add_argument(
        "--interval", type=positive_seconds, default=1.0, help="seconds between pings"
    )
    parser.add_argument(
        "--duration", type=positive_seconds, default=None, help="stop after this long"
    )
    parser.add_argument(
        "--report", type=positive_seconds, default=5.0, help="seconds between report lines"
    )
    parser.add_argument(
        "--disconnect-every", type=COUNT.parse, default=0, help="reconnect the reader every N pings"
    )
    parser.add_argument("--prefix", default="trioprobe/logping/", help="etcd key prefix")
    parser.set_defaults(func=_cmd_logping)


def _cmd_logping(args: argparse.Namespace) -> int:
    try:
        check_log_spec(args.log)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    for name in ("interval", "report"):
        if getattr(args, name) <= 0:
            raise CLIError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.duration is not None and args.duration <= 0:
        raise CLIError(f"--duration must be positive, got {args.duration}")
    if args.disconnect_every < 0:
        raise CLIError("--disconnect-every must be >= 0")
    trio.run(_run, args)
    return 0


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:.2f}ms"


def report_line(pinger: Pinger) -> str:
    m = pinger.metrics
    q = quantiles(m.ping_latency)
    return (
        f"pings {m.pings_started} ok {m.pings_succeeded} aborted {m.pings_aborted} "
        f"append_failed {m.pings_append_failed} restarts {m.restarts} "
        f"last_applied {m.last_applied} | p50 {_ms(q[0.5])} p90 {_ms(q[0.9])} "
        f"p99 {_ms(q[0.99])}"
    )


async def _run(args: argparse.Namespace) -> None:
    async with open_log(args.log, prefix=args.prefix) as log:
        pinger = Pinger(
            log.appender,
            log.reader,
            log.next_index,
            ping_interval=args.interval,
            pings_until_disconnect=args.disconnect_every,
        )
        print(f"pinging {log.name} every {args.interval}s", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

                async def report() -> None:
                    while True:
                        await trio.sleep(args.report)
                        print(report_line(pinger), flush=True)

                nursery.start_soon(stop_on_signal)
                await nursery.start(pinger.run)
                nursery.start_soon(report)
                if args.duration is not None:
                    nursery.cancel_scope.deadline = trio.current_time() + args.duration
        print(report_line(pinger), flush=True)
