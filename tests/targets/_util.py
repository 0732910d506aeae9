"""Helpers of the targets tests."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def wait_for(predicate: Callable[[], bool], step: float = 0.01) -> None:
    """Until ``predicate()`` holds; the caller's ``fail_after`` bounds it."""
    while not predicate():  # noqa: ASYNC110 - polling a watcher's effect from outside
        await trio.sleep(step)
