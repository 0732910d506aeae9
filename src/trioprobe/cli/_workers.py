"""``trioprobe run CONFIG --workers N``: the parent process (docs/fleet.md, "One host, all
cores"). It serves the host's public ``/metrics`` and status page, supervises the workers
(:mod:`trioprobe.fleet.supervisor`) and drains them on SIGTERM/SIGINT; each worker is
``trioprobe run CONFIG --worker I/N`` (see :func:`worker_slot` and ``_run``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import partial
from typing import Any

import httpx
import trio

from .._asgi import serve_asgi
from .._groups import leaves
from ..config import Config
from ..fleet.host import HostMetrics, HostStatus
from ..fleet.supervisor import Supervisor, WorkerFailed
from ..fleet.workers import MAX_WORKERS
from ._common import CLIError, watch_signals

__all__ = ["add_worker_options", "run_host", "worker_slot"]


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of processes from 1 to {MAX_WORKERS}, got {text!r}"
        )
    return value


def worker_slot(text: str) -> tuple[int, int]:
    """``--worker I/N`` (set by the parent): this process is worker I of N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count) <= MAX_WORKERS):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return int(index), int(count)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="run N worker processes that share the targets, behind one /metrics and one "
        "status page (default 1: one process, as always; docs/fleet.md)",
    )
    # Internal: how the parent starts its workers.
    parser.add_argument("--worker", type=worker_slot, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-status-url", default=None, help=argparse.SUPPRESS)


def check_host_config(config: Config) -> None:
    if config.fleet is not None:
        raise CLIError(
            "--workers: a [fleet] agent runs as one process; run one agent per core instead "
            "(each with its own [fleet] agent name)"
        )


def _worker_argv(args: argparse.Namespace, count: int, public_status: str | None) -> Any:
    def argv(index: int) -> list[str]:
        out = [sys.executable, "-m", "trioprobe.cli", "run", os.path.abspath(args.config)]
        out += ["--worker", f"{index}/{count}", "--log-format", args.log_format]
        if args.log_file:
            out += ["--log-file", os.path.abspath(args.log_file)]
        if public_status:
            out += ["--worker-status-url", public_status]
        return out

    return argv


async def _serve(nursery: trio.Nursery, app: Any, host: str, port: int, what: str) -> str:
    try:
        url: str = await nursery.start(serve_asgi, app, host, port)
    except OSError as exc:
        raise CLIError(f"{what} could not start: {exc}") from None
    return url


async def run_host(config: Config, args: argparse.Namespace) -> int:
    """Serve, supervise and drain ``args.workers`` workers of ``config``."""
    count: int = args.workers
    prometheus = [o for s, o in config.surfacers if s.type == "prometheus"]
    async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
        supervisor = Supervisor(lambda i: [], count)  # its command is set once the URLs are known
        for i, options in enumerate(prometheus):
            app = HostMetrics(
                supervisor,
                client,
                index=i,
                host=options.host,
                path=options.path,
                prefix=options.prefix,
            )
            url = await _serve(nursery, app, options.host, options.port, "the metrics server")
            print(f"prometheus serving at {url}", flush=True)
        public_status = None
        if config.status is not None:
            status = config.status
            open_writes = bool(status.token_env or status.token_file)
            from ..alerting.api import is_loopback

            page = HostStatus(
                supervisor, client, writes_open=open_writes or is_loopback(status.host)
            )
            url = await _serve(nursery, page, status.host, status.port, "the status page")
            public_status = f"{url}/status"
        supervisor.command = _worker_argv(args, count, public_status)
        nursery.start_soon(
            partial(
                watch_signals,
                reload=partial(_forward_reload, supervisor),
                drain=supervisor.shutdown,
                stop=supervisor.kill,
                draining="shutting down the workers (again to stop at once)...",
            )
        )
        try:
            await nursery.start(_supervise, supervisor, nursery.cancel_scope)
        except* WorkerFailed as group:
            raise CLIError(*(f"{exc} (its error is above)" for exc in leaves(group))) from None
        if public_status:
            print(f"status page at {public_status}", flush=True)
        print(f"{count} workers running (pids {_pids(supervisor)})", flush=True)
        if args.duration is not None:
            nursery.start_soon(_shutdown_after, args.duration, supervisor)
    return 0


def _pids(supervisor: Supervisor) -> str:
    return ", ".join(str(w.pid) for w in supervisor.workers)


async def _supervise(
    supervisor: Supervisor,
    everything: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    await supervisor.run(task_status=task_status)
    # Every worker has drained and exited: the servers and the signal watcher are done too.
    everything.cancel()


async def _shutdown_after(seconds: float, supervisor: Supervisor) -> None:
    await trio.sleep(seconds)
    supervisor.shutdown()


async def _forward_reload(supervisor: Supervisor) -> None:
    """SIGHUP: each worker reloads the config file itself."""
    supervisor.forward(signal.SIGHUP)
