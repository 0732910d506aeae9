"""Old spellings kept for one release: each use warns once per call site and names the new one.

Every rename that keeps an old name goes through here, so the warning text (and the release it
goes away in) is the same everywhere, and CHANGELOG.md lists them.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

__all__ = ["REMOVED_IN", "renamed_keyword"]

#: The release in which the deprecated spellings go away.
REMOVED_IN = "0.6"

T = TypeVar("T")


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"{old} is deprecated, use {new} (the old name goes away in trioprobe {REMOVED_IN})",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def renamed_keyword(old: str, old_value: T | None, new: str, new_value: T | None) -> T | None:
    """The value of keyword ``new``, taking ``old``'s (with a warning) when only it was given."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"give {new}= only ({old}= is its deprecated spelling)")
    _warn(f"the keyword {old}=", f"{new}=", stacklevel=3)
    return old_value
