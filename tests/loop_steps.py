"""Counting event-loop steps beside work under test: the evidence that a long piece of work
(a refresh of many targets, a large export) yields to other tasks instead of running as one
step (issue 19: nothing costing more than ~1 ms runs on the event loop in one step)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

__all__ = ["Steps", "counting_steps"]


@attrs.define
class Steps:
    """How many times a task beside the work got to run; read it after the block."""

    count: int = 0


@asynccontextmanager
async def counting_steps() -> AsyncIterator[Steps]:
    """Run a task that counts its own turns while the body of the ``async with`` runs.

    Work done in one step leaves the count near zero whatever its size, so a test can require
    a count that grows with the work (say, one step per slice)."""
    steps = Steps()

    async def count() -> None:
        while True:
            await trio.lowlevel.checkpoint()
            steps.count += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        try:
            yield steps
        finally:
            nursery.cancel_scope.cancel()
