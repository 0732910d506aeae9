"""The ``trioprobe`` command. Each capability's subcommands live in their own ``_<name>.py``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._common import CLIError

__all__ = ["CLIError", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioprobe",
        description="Continuous health and latency probing of distributed systems, built on Trio.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = subparsers.add_parser("serve", help="run a server: health endpoint or ZeroMQ")
    serve_subparsers = serve.add_subparsers(dest="server", metavar="SERVER", required=True)
    from . import _handoff, _logping, _probing, _run, _zmqnet

    for module in (_run, _probing, _logping, _zmqnet, _handoff):
        module.register(subparsers, serve_subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"trioprobe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
