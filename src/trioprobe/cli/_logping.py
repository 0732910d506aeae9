"""Subcommands (placeholder: the owning module fills this in)."""

from __future__ import annotations

import argparse
from typing import Any


def register(
    subparsers: argparse._SubParsersAction[Any], serve_subparsers: argparse._SubParsersAction[Any]
) -> None:
    """Add this module's subcommands."""
