"""A TOML table made an attrs value, each problem one line that leads with its key path.

Every section of the config goes through the same steps: unknown keys reported with the closest
known one, durations written as text (``"1m30s"``) made seconds, then cattrs structuring made
strict and its errors reworded. They live here, once, so that a probe table, an alert and the
``[status]`` table report a mistake in the same words.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, is_sequence
from cattrs.errors import ClassValidationError
from cattrs.v import format_exception

from .._durations import DURATION_EXAMPLE, parse_duration
from .._options import is_path_value
from ..registry import PluginError
from ..validators import SECONDS, SECONDS_OR_ZERO, range_for

_converter = cattrs.Converter(forbid_extra_keys=True)


# cattrs converts leniently by default: `targets = "http://x/"` became a tuple of characters,
# `name = 5` the string "5", `interval = true` 1.0. A config mistake must be an error instead.
def _strict_scalar(cls: type[Any]) -> Callable[[Any, Any], Any]:
    accepted: tuple[type[Any], ...] = (int, float) if cls is float else (cls,)

    def structure(value: Any, _: Any) -> Any:
        if (isinstance(value, bool) and cls is not bool) or not isinstance(value, accepted):
            raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
        return cls(value)

    return structure


def _no_string_tuples(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    default = homogenous_tuple_structure_factory(type_, converter)

    def structure(value: Any, type_: Any) -> Any:
        if isinstance(value, str | bytes | Mapping):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        return default(value, type_)

    return structure


for _cls in (str, int, float, bool):
    _converter.register_structure_hook(_cls, _strict_scalar(_cls))
_converter.register_structure_hook_factory(
    lambda t: is_sequence(t) and getattr(t, "__origin__", None) is tuple, _no_string_tuples
)


def _format_exception(exc: BaseException, type_: type | None) -> str:
    # A ValueError with no target type was raised by an Options validator, whose message says
    # what is wrong; cattrs would reduce it to "invalid value".
    if isinstance(exc, ValueError) and type_ is None and str(exc):
        return str(exc)
    return format_exception(exc, type_)


def _describe(exc: BaseException, path: str) -> list[str]:
    if isinstance(exc, ClassValidationError | cattrs.BaseValidationError):
        messages = cattrs.transform_error(exc, path=path, format_exception=_format_exception)
        return [_tidy(m) for m in messages]
    return [f"{exc} @ {path}"]


def _tidy(message: str) -> str:
    # cattrs says "... @ $.probe[0].interval"; lead with the key path, which is what users scan.
    text, _, where = message.rpartition(" @ ")
    where = where.removeprefix("$.").removeprefix("$")
    if text.startswith("extra fields found"):
        text = text.replace("extra fields found", "unknown key(s)", 1)
    return f"{where}: {text}" if text else message


def structure(
    data: Any, cls: type[Any], path: str, errors: list[str], quiet: Collection[str] = ()
) -> Any:
    """``data`` structured as ``cls``, or ``None`` with its problems added to ``errors``.

    Messages about the key paths in ``quiet`` are dropped: each was already reported as part of
    another problem (one line per problem: a misspelt required key is one mistake, not an unknown
    key plus a missing one).
    """
    try:
        return _converter.structure(data, cls)
    except Exception as exc:  # cattrs raises many kinds; each becomes a message
        messages = _describe(exc, path)
        errors.extend(m for m in messages if m.partition(": ")[0] not in quiet)
        return None


def _closest(word: str, choices: Collection[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(word: str, choices: Collection[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``choices``, or ``; expected one of ...``
    when nothing is close and the list is short enough to read in one line."""
    close = _closest(word, choices)
    if close is not None:
        return f"; did you mean {close!r}?"
    if len(choices) <= 12:
        return f"; expected one of {', '.join(sorted(choices))}"
    return ""


def _unknown_keys(
    table: Mapping[str, Any],
    known: Collection[str],
    path: str,
    errors: list[str],
    required: Collection[str] = (),
) -> tuple[dict[str, Any], set[str]]:
    """``table`` without its unknown keys, each reported on a line of its own with the closest
    known key; and the key paths suggested (a required key suggested must not also be reported
    as missing: a misspelt key is one mistake).

    A key the table already sets is not suggested; a missing ``required`` key is, more
    leniently (``qnam`` is taken for a missing ``query_name``).
    """
    kept = {key: value for key, value in table.items() if key in known}
    unset = [key for key in known if key not in table]
    missing = [key for key in required if key not in table]
    suggested: set[str] = set()
    for key in [key for key in table if key not in kept]:
        lenient = difflib.get_close_matches(key, missing, n=1, cutoff=0.4)
        close = lenient[0] if lenient else _closest(key, unset)
        if close is not None:
            errors.append(f"{path}.{key}: unknown key; did you mean {close!r}?")
            suggested.add(f"{path}.{close}")
        else:
            errors.append(f"{path}.{key}: unknown key{suggest(key, known)}")
    return kept, suggested


#: Integer keys that are whole seconds: a duration is accepted if it is a whole number of them.
_WHOLE_SECONDS = frozenset({"refresh"})


def _duration_keys(cls: type[Any]) -> dict[str, bool]:
    """The keys of attrs class ``cls`` that are seconds: name -> whether it is whole seconds.

    A float key is seconds unless :data:`~trioprobe.validators.KEY_RANGES` says otherwise
    (``base``, ``scale``), as everywhere in the config."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a plugin's Options with unresolvable annotations: no durations then
        return {}
    keys: dict[str, bool] = {}
    for field in attrs.fields(cls):
        hint = hints.get(field.name)
        if hint is float or (
            typing.get_origin(hint) in (typing.Union, types.UnionType)
            and set(typing.get_args(hint)) == {float, type(None)}
        ):
            if range_for(field.name, 1.0) in (SECONDS, SECONDS_OR_ZERO):
                keys[field.name] = False
        elif hint is int and field.name in _WHOLE_SECONDS:
            keys[field.name] = True
    return keys


def durations(
    table: Mapping[str, Any], cls: type[Any], path: str, errors: list[str]
) -> tuple[dict[str, Any], set[str]]:
    """``table`` with durations written as text (``"5s"``, ``"1m30s"``) in its seconds keys made
    numbers of seconds; and the key paths of the bad ones (reported here, once)."""
    out = dict(table)
    bad: set[str] = set()
    if not attrs.has(cls):
        return out, bad
    for key, whole in _duration_keys(cls).items():
        value = table.get(key)
        if not isinstance(value, str):
            continue
        try:
            seconds = parse_duration(value)
        except ValueError:
            errors.append(f"{path}.{key}: expected {DURATION_EXAMPLE}, got {value!r}")
            bad.add(f"{path}.{key}")
            continue
        if whole and not seconds.is_integer():
            errors.append(f"{path}.{key}: expected a whole number of seconds, got {value!r}")
            bad.add(f"{path}.{key}")
            continue
        out[key] = int(seconds) if whole else seconds
    return out, bad


def known_durations(
    table: Mapping[str, Any],
    cls: type[Any],
    path: str,
    errors: list[str],
    common: Collection[str] = (),
) -> tuple[dict[str, Any], set[str]]:
    """``table`` (of attrs class ``cls``) without unknown keys and with durations made seconds,
    and the key paths whose problems are already reported. ``common`` keys (split off before)
    are known too: ``intervl`` is closest to the common ``interval``."""
    known = attrs.fields_dict(cls).keys() | common
    required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
    kept, suggested = _unknown_keys(table, known, path, errors, required)
    kept, bad = durations(kept, cls, path, errors)
    return kept, suggested | bad


def options_class(
    registry: Any, type_name: object, path: str, errors: list[str]
) -> type[Any] | None:
    """The ``Options`` class of a probe or surfacer type, if the type is known and loads."""
    if not isinstance(type_name, str) or type_name not in registry:
        return None
    try:
        cls: type[Any] = registry.load(type_name).Options
    except PluginError as exc:
        errors.append(f"{path}.type: {exc}")
        return None
    return cls if attrs.has(cls) else None


def nested_tables(cls: type[Any]) -> dict[str, type[Any]]:
    """The keys of ``cls`` that are tables of their own (``latency_buckets = {...}``): an
    attrs class, or an optional one."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: no nested checks then
        return {}
    out: dict[str, type[Any]] = {}
    for name, hint in hints.items():
        candidates = (
            typing.get_args(hint)
            if typing.get_origin(hint) in (typing.Union, types.UnionType)
            else (hint,)
        )
        for candidate in candidates:
            if isinstance(candidate, type) and attrs.has(candidate):
                out[name] = candidate
    return out


def split(
    table: Mapping[str, Any], common: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    own = {k: v for k, v in table.items() if k in common}
    rest = {k: v for k, v in table.items() if k not in common}
    return own, rest


def resolve_paths(options: Any, base_dir: Path) -> Any:
    """``options`` with its relative path fields (see ``_options.path_field``) made absolute under
    ``base_dir``.

    ``""`` and ``"-"`` (standard output) are left alone.
    """
    changes = {}
    for field in attrs.fields(type(options)):
        value = getattr(options, field.name)
        if is_path_value(field, value) and value not in ("", "-") and not os.path.isabs(value):
            changes[field.name] = str(base_dir / value)
    return attrs.evolve(options, **changes) if changes else options
