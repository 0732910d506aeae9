"""Helpers shared by the core tests."""

from __future__ import annotations

from collections.abc import Iterator

import trio
import trio.lowlevel


def all_tasks() -> list[trio.lowlevel.Task]:
    """Every task in the current run, found by walking the nursery tree from the root."""

    def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
        yield task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from walk(child)

    return list(walk(trio.lowlevel.current_root_task()))  # type: ignore[arg-type]


def drain(channel: trio.MemoryReceiveChannel[object]) -> list[object]:
    """Whatever is buffered in ``channel`` right now."""
    items = []
    while True:
        try:
            items.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items
