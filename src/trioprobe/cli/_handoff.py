"""``trioprobe queue inspect DIR`` and ``trioprobe queue dump DIR``: look into a handoff queue.

Both are read-only and take no lock, so they are safe beside a running queue.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any

from ..handoff import QueueError, inspect_queue, iter_records
from ._common import CLIError


def register(
    subparsers: argparse._SubParsersAction[Any], serve_subparsers: argparse._SubParsersAction[Any]
) -> None:
    """Add ``queue inspect`` and ``queue dump`` (``serve_subparsers`` is not used)."""
    queue = subparsers.add_parser("queue", help="inspect or dump a hinted-handoff queue directory")
    sub = queue.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    inspect = sub.add_parser(
        "inspect", help="segments, sizes, head position, record counts, corrupt records"
    )
    inspect.add_argument("dir", help="the queue directory")
    inspect.set_defaults(func=_inspect)

    dump = sub.add_parser("dump", help="print the records still to be delivered (from the head)")
    dump.add_argument("dir", help="the queue directory")
    dump.add_argument(
        "--all", action="store_true", help="include records already consumed in kept segments"
    )
    dump.add_argument(
        "--raw", action="store_true", help="write the payloads only, each followed by a newline"
    )
    dump.add_argument(
        "--limit", type=_count, default=0, metavar="N", help="stop after N records (0: all)"
    )
    dump.set_defaults(func=_dump)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 means all), got {n}")
    return n


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _inspect(args: argparse.Namespace) -> int:
    try:
        info = inspect_queue(args.dir)
    except (QueueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"handoff queue {info.directory}")
    for col in ("segment", "size", "records", "pending", "corrupt", "torn tail", "header"):
        table.add_column(col, justify="left" if col == "header" else "right")
    for s in info.segments:
        table.add_row(
            str(s.id),
            _size(s.size),
            str(s.records),
            str(s.pending),
            str(s.corrupt),
            _size(s.torn_bytes) if s.torn_bytes else "-",
            s.header_problem or "ok",
        )
    console = Console()
    console.print(table)
    console.print(f"head: segment {info.head_segment} offset {info.head_offset}")
    if info.head_note:
        console.print(f"head note: {info.head_note}")
    console.print(
        f"total: {len(info.segments)} segments, {_size(info.total_bytes)}, "
        f"{info.records} records, {info.pending} pending, {info.corrupt} corrupt"
    )
    return 0


def _dump(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    try:
        for n, rec in enumerate(iter_records(args.dir, all_records=args.all), 1):
            if args.raw:
                out.write(rec.data + b"\n")
            else:
                when = datetime.datetime.fromtimestamp(rec.timestamp, datetime.UTC)
                preview = rec.data[:80].decode("utf-8", "backslashreplace").replace("\n", "\\n")
                more = "..." if len(rec.data) > 80 else ""
                line = (
                    f"{rec.segment}:{rec.offset}\t{when.isoformat()}\t{len(rec.data)}\t"
                    f"{preview}{more}\n"
                )
                out.write(line.encode())
            if args.limit and n >= args.limit:
                break
        out.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (QueueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    return 0
