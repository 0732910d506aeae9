"""``trioprobe serve zmq``, ``trioprobe send`` and ``trioprobe bench``: rtreq's three commands."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import trio
import zmq
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .._groups import leaves
from ..validators import COUNT, POSITIVE_COUNT
from ..zmqnet import (
    BenchmarkCounters,
    BenchmarkResult,
    Client,
    RepServer,
    RouterServer,
    ZmqNetError,
    benchmark,
    check_endpoint,
    shared_context,
)
from ..zmqnet._output import check_appendable
from ..zmqnet.server import DEFAULT_ADDR, DEFAULT_WORKERS
from ._common import CLIError, positive_seconds

__all__ = ["register"]

#: rtreq's port, on loopback like the HTTP surfaces (tcp://*:4157 serves every interface).
DEFAULT_SERVE_ADDR = DEFAULT_ADDR


def register(
    subparsers: argparse._SubParsersAction[Any], serve_subparsers: argparse._SubParsersAction[Any]
) -> None:
    """Add ``serve zmq``, ``send`` and ``bench``."""
    serve = serve_subparsers.add_parser(
        "zmq",
        help="run a ZeroMQ request/reply server (ROUTER with workers, or --sync REP)",
        description=(
            "Answer ZeroMQ requests (plain REQ, DEALER or trioprobe clients) with rtreq's reply "
            "text, counting accesses per client. Stops on Ctrl-C, SIGTERM or after --uptime; "
            "then prints the access metrics and appends them to --metrics-out if given."
        ),
    )
    serve.add_argument(
        "--addr",
        default=DEFAULT_SERVE_ADDR,
        help=f"address to bind; host:port means tcp:// (default {DEFAULT_SERVE_ADDR})",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"worker tasks of the ROUTER server; 0 means {DEFAULT_WORKERS}",
    )
    serve.add_argument(
        "--sync", action="store_true", help="answer one request at a time (a REP server)"
    )
    serve.add_argument(
        "--uptime", type=positive_seconds, default=None, help="stop after this many seconds"
    )
    serve.add_argument(
        "--metrics-out", default=None, help="append the metrics as a JSON line to this file"
    )
    serve.add_argument("--name", default=None, help="server name in replies (default: host name)")
    serve.set_defaults(func=_cmd_serve)

    send = subparsers.add_parser(
        "send",
        help="send messages to a ZeroMQ server and print the replies",
        description="Send each MSG in turn (Lazy Pirate: timeout, reconnect, retry).",
    )
    send.add_argument("addr", metavar="ADDR", help="server address; host:port means tcp://")
    send.add_argument("messages", metavar="MSG", nargs="+", help="messages to send")
    _client_options(send)
    send.set_defaults(func=_cmd_send)

    bench = subparsers.add_parser(
        "bench",
        help="closed-loop request/reply benchmark against a ZeroMQ server",
        description=(
            "Each client keeps one request outstanding for --duration seconds; prints the "
            "throughput and latency percentiles, and appends a JSON line to --results."
        ),
    )
    bench.add_argument("addr", metavar="ADDR", help="server address; host:port means tcp://")
    bench.add_argument(
        "--duration", type=positive_seconds, default=30.0, help="seconds (default 30)"
    )
    bench.add_argument(
        "--clients", type=POSITIVE_COUNT.parse, default=1, help="concurrent clients (default 1)"
    )
    bench.add_argument(
        "--message-size", type=COUNT.parse, default=0, help="pad requests to this many bytes"
    )
    bench.add_argument("--results", default=None, help="append the result as a JSON line here")
    _client_options(bench)
    bench.set_defaults(func=_cmd_bench)


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=positive_seconds, default=5.0, help="seconds per attempt (default 5)"
    )
    parser.add_argument(
        "--retries",
        type=POSITIVE_COUNT.parse,
        default=3,
        help="attempts per message in all (default 3)",
    )
    parser.add_argument(
        "--identity", default=None, help="name part of the client identity (default: host name)"
    )


def _address(addr: str) -> str:
    if "://" not in addr:
        if ":" not in addr:
            raise CLIError(f"address {addr!r} needs a port (host:port or tcp://host:port)")
        addr = f"tcp://{addr}"
    try:
        # libzmq would bind or connect tcp://*:99999 to some other port without a word.
        check_endpoint(addr)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return addr


def _connect_address(addr: str) -> str:
    """:func:`_address`, then refuse what libzmq's ``connect`` would refuse (a bad port, an
    unknown transport) before anything starts, so the user gets one line rather than a traceback
    from the middle of a run."""
    endpoint = _address(addr)
    # A bare pyzmq socket: the Trio wrapper can only be closed inside trio.run.
    sock = shared_context().socket(zmq.DEALER)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        # pyzmq's str(exc) would add "(addr='...')" to a line that names the address already.
        reason = zmq.strerror(exc.errno) if exc.errno is not None else str(exc)
        raise CLIError(f"cannot connect to {endpoint!r}: {reason}") from None
    finally:
        sock.close(linger=0)
    return endpoint


def _describe(error: OSError) -> str:
    """One line naming the file or address: our socket errors name the address in strerror,
    but for open() errors strerror alone ("No such file or directory") does not say which file."""
    message = error.strerror or str(error)
    if error.filename is not None:
        message = f"{error.filename}: {message}"
    return message


def _check_client_args(args: argparse.Namespace) -> None:
    if args.timeout <= 0:
        raise CLIError(f"--timeout must be positive, got {args.timeout}")
    if args.retries < 1:
        raise CLIError(f"--retries is the number of attempts and must be >= 1, got {args.retries}")


# -- serve ------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.workers < 0:
        raise CLIError(f"--workers must be >= 0, got {args.workers}")
    if args.uptime is not None and args.uptime <= 0:
        raise CLIError(f"--uptime must be positive, got {args.uptime}")
    addr = _address(args.addr)
    server: RepServer | RouterServer
    if args.sync:
        server = RepServer(addr, name=args.name, metrics_path=args.metrics_out)
    else:
        server = RouterServer(
            addr, workers=args.workers, name=args.name, metrics_path=args.metrics_out
        )
    try:
        trio.run(_serve, server, args.uptime)
    except* OSError as group:
        # A bind or --metrics-out error surfaces through the nursery, in an exception group.
        raise CLIError(*(_describe(error) for error in leaves(group))) from None
    print(server.metrics.summary(), flush=True)
    return 0


async def _serve(server: RepServer | RouterServer, uptime: float | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.run)
            kind = "REP (sync)" if isinstance(server, RepServer) else f"ROUTER x{server.workers}"
            print(f"serving zmq {kind} on {bound}", flush=True)
            if uptime is not None:
                nursery.cancel_scope.deadline = trio.current_time() + uptime
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


# -- send -------------------------------------------------------------------------------------


def _cmd_send(args: argparse.Namespace) -> int:
    _check_client_args(args)
    return trio.run(_send, _connect_address(args.addr), args)


async def _send(addr: str, args: argparse.Namespace) -> int:
    async with Client(
        addr, identity=args.identity, timeout=args.timeout, retries=args.retries
    ) as client:
        for message in args.messages:
            try:
                reply = await client.send(message)
            except ZmqNetError as exc:  # MessageDroppedError, RemoteError, ProtocolError
                print(f"trioprobe: {exc}", file=sys.stderr)
                return 1
            print(reply.decode("utf-8", "replace"), flush=True)
    return 0


# -- bench ------------------------------------------------------------------------------------


def _cmd_bench(args: argparse.Namespace) -> int:
    _check_client_args(args)
    if args.duration <= 0:
        raise CLIError(f"--duration must be positive, got {args.duration}")
    if args.clients < 1:
        raise CLIError(f"--clients must be >= 1, got {args.clients}")
    if args.message_size < 0:
        raise CLIError(f"--message-size must be >= 0, got {args.message_size}")
    addr = _connect_address(args.addr)
    if args.results:
        # benchmark() checks too, but only once the progress display is up.
        try:
            check_appendable(args.results)
        except OSError as exc:
            raise CLIError(_describe(exc)) from None
    console = Console()
    try:
        # Still possible: the final append failing (say, the disk is full) after the run.
        result = trio.run(_bench, addr, args, console)
    except* OSError as group:
        raise CLIError(*(_describe(error) for error in leaves(group))) from None
    console.print(_summary(result))
    if args.results:
        console.print(f"appended result to {args.results}")
    return 0 if result.messages else 1


async def _bench(addr: str, args: argparse.Namespace, console: Console) -> BenchmarkResult:
    counters = BenchmarkCounters()
    progress = Progress(
        TextColumn("[bold]bench[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    result: BenchmarkResult | None = None
    with progress:
        task = progress.add_task(addr, total=args.duration, stats="starting")

        async def show() -> None:
            while True:
                elapsed = trio.current_time() - counters.started if counters.started else 0.0
                rate = counters.messages / elapsed if elapsed > 0 else 0.0
                progress.update(
                    task,
                    completed=min(elapsed, args.duration),
                    stats=f"{counters.messages} msgs, {counters.drops} drops, {rate:,.0f} msg/s",
                )
                await trio.sleep(0.2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(show)
            result = await benchmark(
                addr,
                duration=args.duration,
                clients=args.clients,
                timeout=args.timeout,
                retries=args.retries,
                message_size=args.message_size,
                identity=args.identity,
                results=args.results,
                counters=counters,
            )
            nursery.cancel_scope.cancel()
    assert result is not None
    return result


def _summary(result: BenchmarkResult) -> Table:
    table = Table(title=f"benchmark of {result.addr}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    lat = result.latency()
    rows: list[tuple[str, str]] = [
        ("clients", str(result.clients)),
        ("duration", f"{result.duration:.2f} s"),
        ("messages", str(result.messages)),
        ("drops", str(result.drops)),
        ("errors", str(result.errors)),
        ("throughput (wall)", f"{result.throughput:,.1f} msg/s"),
        ("throughput (reference: msgs / summed latency)", f"{result.reference_throughput:,.1f}"),
    ]
    for key in ("mean", "stddev", "minimum", "p50", "p90", "p99", "p99.9", "maximum"):
        rows.append((f"latency {key}", f"{lat[key] / 1000:,.1f} µs"))
    for name, value in rows:
        table.add_row(name, value)
    return table
