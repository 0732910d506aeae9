"""Helpers for the ``Options`` classes of probe and surfacer types."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["is_path_field", "path_field"]

_PATH = "trioprobe_path"


def path_field(default: str) -> Any:
    """An Options field holding a filesystem path.

    The config resolves a relative value against the config file's folder, as it does
    ``targets_file``, so a config means the same whatever directory it is run from.
    """
    return attrs.field(default=default, metadata={_PATH: True})


def is_path_field(field: attrs.Attribute[Any]) -> bool:
    return bool(field.metadata.get(_PATH))
