"""Argument templates (``"{target}"``, ``"{labels[env]}"``) of the external probe's ``command``
and the alert ``command``: one checker and one renderer for both.

Why not ``str.format_map``: a format spec (``"{port:d}"``, ``"{target:{probe}}"``) or a
conversion passes :class:`string.Formatter`'s parser and then raises ``ValueError`` at run time,
when the value arrives (a string under ``:d``), which took a whole run down. Here a template is
checked once, where it is configured (the error names the key), and rendered by substitution
only: no spec or conversion is ever applied to a value, so rendering a checked template cannot
raise, whatever the values are.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping

__all__ = ["TemplateError", "check_template", "render_template"]

_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A template that cannot be used; the message quotes it and says why."""


def _fields(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return [
            (literal, field, spec, conversion)
            for literal, field, spec, conversion in _FORMATTER.parse(template)
            if field is not None or literal
        ]
    except ValueError as exc:
        raise TemplateError(
            f"bad template {template!r}: {exc} (write {{{{ or }}}} for a literal brace)"
        ) from None


def _split(field: str) -> tuple[str, str | None]:
    """``name`` -> (name, None); ``name[key]`` -> (name, key); anything else: (field, "")."""
    root, bracket, rest = field.partition("[")
    if not bracket:
        return field, None
    if not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1] or not rest[:-1]:
        return field, ""
    return root, rest[:-1]


def check_template(template: str, names: Collection[str], mappings: Collection[str] = ()) -> None:
    """Raise :class:`TemplateError` unless every placeholder of ``template`` is ``{NAME}`` with
    NAME in ``names``, or ``{NAME[KEY]}`` with NAME in ``mappings``; no format spec
    (``{x:d}``) and no conversion (``{x!r}``)."""
    expected = [f"{{{n}}}" for n in sorted(names)] + [f"{{{m}[NAME]}}" for m in sorted(mappings)]
    for _, field, spec, conversion in _fields(template):
        if field is None:
            continue
        if spec or conversion:
            shown = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise TemplateError(
                f"{{{shown}}} in {template!r}: format specs and conversions are not supported; "
                f"write {{{field}}}"
            )
        root, key = _split(field)
        if (key is None and root in names) or (key and root in mappings):
            continue
        raise TemplateError(
            f"unknown field {{{field}}} in {template!r}; expected one of "
            f"{', '.join(expected)} ({{{{ and }}}} for a literal brace)"
        )


def render_template(template: str, values: Mapping[str, object]) -> str:
    """``template`` with each placeholder replaced by its value (``str()`` of it).

    For a template that passed :func:`check_template` with names ``values`` has, this cannot
    raise but ``KeyError`` (a ``{NAME[KEY]}`` whose KEY the mapping lacks: the caller says
    which). Specs and conversions are never applied.
    """
    parts: list[str] = []
    for literal, field, _, _ in _fields(template):
        parts.append(literal)
        if field is None:
            continue
        root, key = _split(field)
        value = values[root]
        if key is not None:
            if not isinstance(value, Mapping):
                raise KeyError(field)
            value = value[key]
        parts.append(str(value))
    return "".join(parts)
