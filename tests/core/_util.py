"""Helpers shared by the core tests."""

from __future__ import annotations

import trio


def drain(channel: trio.MemoryReceiveChannel[object]) -> list[object]:
    """Whatever is buffered in ``channel`` right now."""
    items = []
    while True:
        try:
            items.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items
