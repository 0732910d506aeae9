"""Output files (server metrics, benchmark results) are checked before the work that fills them."""

from __future__ import annotations

import os

__all__ = ["check_appendable"]


def check_appendable(path: str | os.PathLike[str]) -> None:
    """Open ``path`` for append and close it again; raise the ``OSError`` if that fails.

    Metrics and results are appended once, at the end of a run that may last hours: a typo in the
    path must fail at the start, not throw the run's figures away. Opening for append creates the
    file (empty) if it is missing, which the final append would have done anyway.
    """
    with open(path, "a", encoding="utf-8"):
        pass
