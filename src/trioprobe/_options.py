"""Helpers for the ``Options`` classes of probe and surfacer types."""

from __future__ import annotations

import os
from typing import Any

import attrs

__all__ = ["is_path_field", "is_path_value", "module_field", "path_field"]

_PATH = "trioprobe_path"
_IF_FILE = "if-file"


def path_field(default: str) -> Any:
    """An Options field holding a filesystem path.

    The config resolves a relative value against the config file's folder, as it does
    ``targets_file``, so a config means the same whatever directory it is run from.
    """
    return attrs.field(default=default, metadata={_PATH: True})


def is_path_field(field: attrs.Attribute[Any]) -> bool:
    return bool(field.metadata.get(_PATH))


def module_field(default: str) -> Any:
    """An Options field naming Python code: a file (``checks/login.py``), resolved against the
    config file's folder like a :func:`path_field`, or a dotted module name, left alone."""
    return attrs.field(default=default, metadata={_PATH: _IF_FILE})


def is_path_value(field: attrs.Attribute[Any], value: object) -> bool:
    """Whether ``value`` of ``field`` is a path to resolve against the config file's folder."""
    mark = field.metadata.get(_PATH)
    if mark == _IF_FILE:
        text = str(value)
        return text.endswith(".py") or "/" in text or os.sep in text
    return bool(mark)
