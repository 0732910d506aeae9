"""The ``trioprobe`` command. Each capability's subcommands live in their own ``_<name>.py``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ._common import CLIError

__all__ = ["CLIError", "main"]


class _Parser(argparse.ArgumentParser):
    """An argument mistake is a user error like any other: one ``trioprobe: error:`` line and
    exit 2 from :func:`main` (argparse would print the whole usage and exit the process)."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trioprobe",
        description="Continuous health and latency probing of distributed systems, built on Trio.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = subparsers.add_parser("serve", help="run a server: health endpoint or ZeroMQ")
    serve_subparsers = serve.add_subparsers(dest="server", metavar="SERVER", required=True)
    from . import _fleet, _handoff, _logping, _probing, _run, _zmqnet

    for module in (_run, _probing, _logping, _zmqnet, _handoff, _fleet):
        module.register(subparsers, serve_subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trioprobe`` command line on ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status (2 for a user mistake, told in one ``trioprobe: error:`` line).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except CLIError as exc:
        for message in exc.messages:
            print(f"trioprobe: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
