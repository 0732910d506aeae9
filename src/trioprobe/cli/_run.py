"""``trioprobe run CONFIG``, ``trioprobe check CONFIG`` and ``trioprobe demo``."""

from __future__ import annotations

import argparse
import math
import sys
from functools import partial
from typing import Any, Literal

import trio
from rich.console import Console
from rich.live import Live

from .._groups import leaves
from ..config import (
    Config,
    ConfigError,
    ProbeSpec,
    exposition_warnings,
    load_config,
    probe_series,
)
from ..probes import probe_types
from ..reload import ReloadOutcome
from ..runner import Runner, StartupError
from ..surfacers import Serving, surfacer_types
from ..surfacers.lines import Options as LinesOptions
from ..surfacers.prometheus import PrometheusSurfacer
from ._common import CLIError, positive_seconds, watch_signals
from ._demo import run_demo
from ._live import LiveStats
from ._logging import add_log_options, logging_to
from ._workers import add_worker_options, check_host_config, run_host

__all__ = ["register", "run_config"]


def register(
    subparsers: argparse._SubParsersAction[Any], serve_subparsers: argparse._SubParsersAction[Any]
) -> None:
    run = subparsers.add_parser(
        "run", help="run the probes and surfacers of a TOML config, with a live table"
    )
    run.add_argument("config", help="path to the TOML config")
    _add_display_options(run)
    add_worker_options(run)
    run.set_defaults(func=_cmd_run)

    check = subparsers.add_parser("check", help="validate a config without running it")
    check.add_argument("config", help="path to the TOML config")
    check.set_defaults(func=_cmd_check)

    demo = subparsers.add_parser(
        "demo",
        help="probe in-process servers on loopback: see trioprobe work with no setup",
    )
    _add_display_options(demo)
    demo.set_defaults(func=_cmd_demo)


def _add_display_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no live table: a line when a target goes up or down, a summary at exit",
    )
    parser.add_argument(
        "--duration",
        type=positive_seconds,
        default=None,
        help="stop by itself after this many seconds",
    )
    parser.add_argument(
        "--refresh",
        type=positive_seconds,
        default=1.0,
        help="seconds between display updates (default 1)",
    )
    add_log_options(parser)


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    try:
        Runner(config)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    print(f"{args.config}: OK")
    for spec, options in config.probes:
        where = _sources_summary(spec)
        origin = probe_types.origin(spec.type)
        kind = f"{spec.type}, {origin}" if origin else spec.type
        series = f"{probe_series(spec, options)} series per target" + (
            " + the program's own" if spec.type == "external" else ""
        )
        print(
            f"  probe {spec.name!r} ({kind}): {where}, every {spec.interval:g}s, "
            f"timeout {spec.timeout:g}s, export every {spec.export_interval:g}s, {series}"
        )
    for sspec, options in config.surfacers:
        origin = surfacer_types.origin(sspec.type)
        print(f"  surfacer {sspec.type}{f' ({origin})' if origin else ''}: {options}")
    if not config.surfacers:
        print("  no surfacers: results are shown by `trioprobe run` only")
    for warning in exposition_warnings(config):
        print(f"  warning: {warning}")
    for alert in config.alerts:
        told = [k for k in ("log", "command", "webhook", "alertmanager") if getattr(alert, k)]
        print(
            f"  alert {alert.name!r} on {', '.join(alert.probes) or 'every other probe'}: "
            f"notifies by {', '.join(told) or 'nothing'}"
        )
    if config.status is not None:
        print(f"  status page on {config.status.host}:{config.status.port}")
    return 0


def _sources_summary(spec: ProbeSpec) -> str:
    parts = [f"{len(spec.targets)} target(s)"] if spec.targets else []
    for key in ("targets_file", "file_sd", "http_sd"):
        value = getattr(spec, key)
        if value:
            parts.append(f"targets file {value}" if key == "targets_file" else f"{key} {value}")
    if spec.dns_sd:
        parts.append(f"dns_sd {spec.dns_sd_type} {', '.join(spec.dns_sd)}")
    if spec.etcd_sd is not None:
        parts.append(f"etcd_sd prefix {spec.etcd_sd.prefix!r}")
    return " + ".join(parts)


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.worker is None and args.workers > 1:
        check_host_config(config)
        _cmd_check_quietly(config)
        with logging_to(args):
            return trio.run(run_host, config, args)
    with logging_to(args):
        return trio.run(run_config, config, args)


def _cmd_check_quietly(config: Config) -> None:
    """What ``check`` refuses, refused once by the parent rather than by every worker."""
    try:
        Runner(config)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    with logging_to(args):
        return trio.run(run_demo, args, run_config)


def _window(config: Config) -> float:
    """The live view's recent window: a minute, or ten intervals of the slowest probe if longer
    (a ratio over one or two results says little)."""
    slowest = max((spec.interval for spec, _ in config.probes), default=1.0)
    return max(60.0, 60.0 * math.ceil(10 * slowest / 60.0))


async def run_config(config: Config, args: argparse.Namespace, title: str = "trioprobe") -> int:
    """Run ``config`` with the live display until a signal, ``--duration`` or a probe error."""
    live = LiveStats(window=_window(config))
    slot: tuple[int, int] | None = getattr(args, "worker", None)
    worker_options: dict[str, Any] = {}
    if slot is not None:
        config, worker_options = _as_worker(config, *slot)
    try:
        runner = Runner(
            config,
            **worker_options,
            on_result=live.observe,
            on_loop_lag=live.observe_loop_lag,
            freeze_gc=True,
            # `trioprobe run FILE` reloads FILE (SIGHUP, POST /-/reload, [reload] watch).
            config_path=getattr(args, "config", None),
            on_reload=_print_reload,
        )
        # The table's state column is the runner's own health verdict (alerts, status page).
        live.health = runner.health
        live.config_errors = runner.config_errors
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    console = Console()
    display = _display_mode(config, args, console)

    async def run_then_stop_helpers(task_status: trio.TaskStatus[None]) -> None:
        await runner.run(task_status=task_status)
        # The run has drained after a shutdown: the display and signal watcher are done too.
        nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    watch_signals,
                    reload=runner.request_reload,
                    drain=runner.shutdown,
                    stop=nursery.cancel_scope.cancel,
                    draining="shutting down (again to stop at once)...",
                )
            )
            await nursery.start(run_then_stop_helpers)
            for surfacer, _ in runner.surfacers if slot is None else ():
                if isinstance(surfacer, Serving) and surfacer.url:
                    console.print(f"{surfacer.name} serving at {surfacer.url}")
            if runner.alerting.status_url and slot is None:
                # Printed plainly (not through rich): scripts and tests read it from stdout.
                print(f"status page at {runner.alerting.status_url}", flush=True)
            if args.duration is not None:
                nursery.start_soon(_shutdown_after, args.duration, runner)
            if slot is not None:
                nursery.start_soon(_serve_parent, runner, getattr(args, "worker_status_url", None))
                display = "changes"
            nursery.start_soon(_display, live, display, args.refresh, title, console)
    except* StartupError as group:
        raise CLIError(*(str(error) for error in leaves(group))) from None
    if display == "table":
        console.print(live.table(f"{title}: final"))
    else:
        for line in live.lines():
            print(line)
    return 0


Display = Literal["table", "changes", "lines", "none"]


def _display_mode(config: Config, args: argparse.Namespace, console: Console) -> Display:
    """What to show while running: the live table (a terminal), changes only (``--quiet``),
    every target's line each refresh (stdout is not a terminal), or nothing.

    A ``lines`` surfacer writing to stdout would tear the live table apart (and interleave with
    the plain lines): then it has stdout, the display steps aside, and we say so once.
    """
    if any(isinstance(o, LinesOptions) and o.path == "-" for _, o in config.surfacers):
        print(
            "trioprobe: the lines surfacer writes to standard output, so no live display "
            "(a summary follows at exit); give it a `path` to get the live table back",
            file=sys.stderr,
        )
        return "none"
    if args.quiet:
        return "changes"
    return "table" if console.is_terminal else "lines"


def _as_worker(config: Config, index: int, count: int) -> tuple[Config, dict[str, Any]]:
    """Worker ``index`` of ``count``'s config and runner options (docs/fleet.md)."""
    from ..fleet.workers import ShardFilter, worker_config
    from ..handoff.disk_queue import prepare_default_root

    # Worker queues may sit in the default root: made (privately) before any worker needs it.
    prepare_default_root()
    options = {"target_filter": ShardFilter(index, count), "labels": {"worker": str(index)}}
    return worker_config(config, index), options


async def _serve_parent(runner: Runner, public_status: str | None) -> None:
    """A worker's side of the parent: say where it serves, and drain when the parent is gone
    (its end of our standard input closes, even when it was killed)."""
    import os

    from ..fleet.workers import ready_line

    urls = [
        f"{s.url}{s.options.path}"
        for s, _ in runner.surfacers
        if isinstance(s, PrometheusSurfacer) and s.url
    ]
    status = runner.alerting.status_url
    if public_status:
        # Alert notices link to the host's page, which routes the target to this worker.
        runner.alerting.status_url = public_status
    print(ready_line(urls, status, os.getpid()), flush=True)
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(4096):
            pass
    runner.shutdown()


def _print_reload(outcome: ReloadOutcome) -> None:
    # One line per reload, plainly (not through rich): scripts and tests read it.
    print(f"trioprobe: {outcome.message}", flush=True)


async def _shutdown_after(seconds: float, runner: Runner) -> None:
    await trio.sleep(seconds)
    runner.shutdown()


async def _display(
    live: LiveStats, mode: Display, refresh: float, title: str, console: Console
) -> None:
    if mode == "none":
        return
    if mode != "table":
        while True:
            await trio.sleep(refresh)
            # Built over many short steps (10,000 targets must not stall the probes).
            lines = await (live.render_changes() if mode == "changes" else live.render_lines())
            for line in lines:
                print(line, flush=True)
    # auto_refresh=False: rich would otherwise refresh from a thread of its own. Standard error is
    # taken over (log lines print above the table) only when it is the terminal itself: when
    # redirected (`2> run.err`), log lines must go there, not onto the screen.
    redirect = _is_terminal(sys.stderr)
    with Live(
        live.table(title, max_rows=_table_rows(console)),
        console=console,
        auto_refresh=False,
        transient=True,
        redirect_stderr=redirect,
    ) as view:
        while True:
            await trio.sleep(refresh)
            # Cut to the terminal's height: rows past it would scroll away unseen, and building
            # and rendering them all is a step as long as the target list.
            view.update(live.table(title, max_rows=_table_rows(console)), refresh=True)


def _table_rows(console: Console) -> int:
    # Title, header, borders and a two-line caption take about eight lines.
    return max(5, console.size.height - 8)


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # closed
        return False
