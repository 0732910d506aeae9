"""Where a probe tick lands: probe ticks are coalesced onto ``TICK_SLOT``'s grid."""

from __future__ import annotations

from trioprobe._ticks import TickGrid
from trioprobe.probes._base import TICK_SLOT


def on_grid(when: float) -> float:
    """The time a tick due at ``when`` (``trio.current_time()`` scale) is delivered."""
    return TickGrid(TICK_SLOT).align(when)
