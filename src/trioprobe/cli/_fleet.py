"""``trioprobe fleet status``: a fleet's members and the targets its agents see down, from etcd."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import trio

from ._common import CLIError

__all__ = ["register"]


def register(
    subparsers: argparse._SubParsersAction[Any], serve_subparsers: argparse._SubParsersAction[Any]
) -> None:
    """Add ``fleet status``."""
    fleet = subparsers.add_parser("fleet", help="inspect a fleet of agents (docs/fleet.md)")
    commands = fleet.add_subparsers(dest="fleet_command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status",
        help="the fleet's live members and the targets they see down",
        description=(
            "Read a fleet's keys from etcd (one range of its prefix, and one lease query per "
            "member) and print its live members and the down votes of its agents."
        ),
    )
    status.add_argument(
        "--etcd", action="append", required=True, help="an etcd client URL (repeatable)"
    )
    status.add_argument("--name", required=True, help="the fleet's name ([fleet] name)")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(func=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    for url in args.etcd:
        if not url.startswith(("http://", "https://")):
            raise CLIError(f"--etcd: {url!r} is not an http:// or https:// URL")
    view = trio.run(_read, args.etcd, args.name)
    if args.json:
        print(json.dumps(view, sort_keys=True))
        return 0
    members = view["members"]
    print(f"fleet {args.name!r}: {len(members)} live member(s), etcd revision {view['revision']}")
    header = ("AGENT", "ZONE", "WEIGHT", "VERSION", "UP FOR", "LEASE LEFT")
    print("{:<20} {:<10} {:>6} {:<8} {:>9} {:>10}  METRICS".format(*header))
    now = time.time()
    for m in members:
        up = f"{now - m['started']:.0f}s" if m["started"] else "?"
        left = f"{m['lease_left']}s" if m["lease_left"] is not None else "?"
        print(
            f"{m['name']:<20} {m['zone'] or '-':<10} {m['weight']:>6g} {m['version'] or '?':<8} "
            f"{up:>9} {left:>10}  {m['metrics_url'] or '-'}"
        )
    votes = view["down"]
    shown = "" if len(votes) == view["votes_total"] else f" (the first {len(votes)} shown)"
    print(f"{view['votes_total']} target(s) seen down by at least one agent{shown}")
    for vote in votes:
        print(f"  {vote['probe']} {vote['target']}: down for {', '.join(vote['agents'])}")
    return 0


async def _read(endpoints: list[str], name: str) -> dict[str, Any]:
    # Imported here: `trioprobe --help` and the other commands do not load the fleet.
    from ..fleet._etcd import EtcdClient, EtcdError
    from ..fleet.membership import read_fleet

    async with EtcdClient(endpoints, timeout=5.0) as etcd:
        try:
            return await read_fleet(etcd, name)
        except EtcdError as exc:
            raise CLIError(f"fleet {name!r}: {exc}") from None
