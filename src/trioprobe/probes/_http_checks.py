"""The ``http`` probe's response validators: a body regex, JSON key paths, a JSON subset,
headers, and blackbox_exporter's ``fail_if_*``; :class:`ResponseChecks` applies them all to an
:class:`~trioprobe._exchange.Exchange`, whichever transport produced it.

Each is parsed once from the config (a bad path or regex is a config error, named by its key)
and then applied to every response. A check returns ``None`` when the response passes, else the
reason it failed, written for people: it becomes the probe's error and the live table's text.

JSON paths are dotted keys with ``[N]`` array indices (``checks.db.up``, ``items[0].id``), as
``jq``/JSONPath write them without the filters; a leading ``$.`` is accepted, and a key that
contains dots or brackets is written ``["a.b"]``. Values compare as JSON does: ``1`` equals
``1.0``, but ``true`` is not ``1``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs
import httpx

from .._exchange import Exchange
from .._scrub import scrub

__all__ = [
    "BlackboxMatchers",
    "HeaderCheck",
    "HeaderMatch",
    "JSONPath",
    "ResponseChecks",
    "check_header_name",
    "check_header_value",
    "check_json_value",
    "header_checks",
    "json_equal",
    "parse_json_path",
    "subset_mismatch",
]

# RFC 9110 token: what a header name (and a method) may be made of.
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# A header value: visible ASCII, space and tab; no CR/LF (header injection), no other controls.
_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
# Error texts quote at most this much of what the server sent.
_QUOTE = 60

_SEGMENT = re.compile(
    r"""
    (?P<key>[^.\[\]"]+)              # a plain key
    | \[(?P<index>\d+)\]             # [N]
    | \["(?P<quoted>(?:[^"\\]|\\.)*)"\]  # ["any key"]
    """,
    re.VERBOSE,
)


def check_header_name(name: str, key: str) -> None:
    """Raise ``ValueError``, naming the config ``key``, unless ``name`` is a header name."""
    if not TOKEN.match(name):
        raise ValueError(
            f"{key}: {name!r} is not a valid header name (letters, digits and -_.!#$%&'*+^`|~)"
        )


def check_header_value(name: str, value: str, key: str = "headers") -> None:
    """Raise ``ValueError`` for a value with control characters; the message never quotes it
    (it may be a secret)."""
    if not _VALUE.match(value):
        raise ValueError(
            f"{key}: the value of header {name!r} has a line break, a control or a non-ASCII "
            "character"
        )


@attrs.frozen
class JSONPath:
    """A parsed key path: the original text, and its steps (``str`` keys, ``int`` indices)."""

    text: str
    steps: tuple[str | int, ...]

    def find(self, document: Any) -> tuple[bool, Any]:
        """``(True, value)`` at the path, or ``(False, where)`` naming the first missing step."""
        value = document
        for depth, step in enumerate(self.steps):
            if isinstance(step, int):
                ok = isinstance(value, list) and step < len(value)
            else:
                ok = isinstance(value, dict) and step in value
            if not ok:
                return False, _render(self.steps[: depth + 1])
            value = value[step]
        return True, value


def parse_json_path(text: str) -> JSONPath:
    """Parse ``a.b[0]["c.d"]``; ``ValueError`` says where a bad path goes wrong."""
    rest = text[1:] if text.startswith("$") else text
    rest = rest[1:] if text.startswith("$.") else rest
    offset = len(text) - len(rest)
    steps: list[str | int] = []
    position = 0
    after_dot = False
    while position < len(rest):
        if rest[position] == "." and steps and not after_dot:
            position += 1
            after_dot = True
            continue
        match = _SEGMENT.match(rest, position)
        if match is None or (match["key"] is not None and steps and not after_dot):
            raise ValueError(
                f"bad JSON path {text!r} at character {position + offset + 1}: "
                'expected a key, [N] or ["key"]'
            )
        if match["key"] is not None:
            steps.append(match["key"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(re.sub(r"\\(.)", r"\1", match["quoted"]))
        position = match.end()
        after_dot = False
    if not steps or after_dot:
        raise ValueError(f"bad JSON path {text!r}: expected keys like a.b[0].c, not ending in .")
    return JSONPath(text, tuple(steps))


def _render(steps: tuple[str | int, ...]) -> str:
    out = ""
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        elif re.fullmatch(r"[^.\[\]\"]+", step):
            out += f".{step}" if out else step
        else:
            out += f"[{json.dumps(step)}]"
    return out


def json_equal(actual: Any, expected: Any) -> bool:
    """Equality as JSON means it: numbers by value, but a boolean is never a number."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(json_equal(actual[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(json_equal(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, int | float):
        return isinstance(actual, int | float) and actual == expected
    return type(actual) is type(expected) and actual == expected


def subset_mismatch(actual: Any, expected: Any, at: tuple[str | int, ...] = ()) -> str | None:
    """Where ``actual`` fails to contain ``expected``, or ``None``.

    Objects match when every expected key is present and matches (extra keys are fine); arrays
    when they have the same length and match element by element; anything else by
    :func:`json_equal`.
    """
    where = _render(at) if at else "the body"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {quote(actual)}"
        for key, value in expected.items():
            if key not in actual:
                return f"{_render((*at, key))}: missing"
            problem = subset_mismatch(actual[key], value, (*at, key))
            if problem is not None:
                return problem
        return None
    if isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            problem = subset_mismatch(a, e, (*at, index))
            if problem is not None:
                return problem
        return None
    if not isinstance(expected, list) and json_equal(actual, expected):
        return None
    return f"{where}: expected {quote(expected)}, got {quote(actual)}"


def check_json_value(value: Any, key: str) -> None:
    """Raise ``ValueError`` unless ``value`` is something JSON can hold (TOML also has dates)."""
    if isinstance(value, dict):
        for item in value.values():
            check_json_value(item, key)
    elif isinstance(value, list):
        for item in value:
            check_json_value(item, key)
    elif not isinstance(value, str | int | float | bool):
        raise ValueError(
            f"{key}: {type(value).__name__} values cannot be compared with JSON; "
            "expected a string, number, boolean, array or table"
        )


def quote(value: Any) -> str:
    """``value`` as JSON, scrubbed of secrets (a target may echo the token), then cut to a length
    an error line can carry: scrubbed first, so the cut cannot leave part of a secret behind."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    text = scrub(text)
    return text if len(text) <= _QUOTE else text[: _QUOTE - 3] + "..."


@attrs.frozen
class HeaderCheck:
    """A response header that must be present and, unless ``pattern`` is empty, match it."""

    name: str
    pattern: re.Pattern[str]

    def problem(self, headers: httpx.Headers) -> str | None:
        values = headers.get_list(self.name)
        if not values:
            return f"header {self.name} missing"
        if self.pattern.pattern and not any(self.pattern.search(v) for v in values):
            return f"header {self.name} {quote(values[0])} does not match /{self.pattern.pattern}/"
        return None


def header_checks(checks: Mapping[str, str]) -> tuple[HeaderCheck, ...]:
    """Parse the ``header_checks`` table; ``ValueError`` names a bad name or regex."""
    parsed = []
    for name, pattern in checks.items():
        check_header_name(name, "header_checks")
        try:
            parsed.append(HeaderCheck(name, re.compile(pattern)))
        except re.error as exc:
            raise ValueError(f"header_checks: bad regex for {name!r}: {exc}") from None
    return tuple(parsed)


def _compile(pattern: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{key}: bad regex {pattern!r}: {exc}") from None


@attrs.frozen
class HeaderMatch:
    """One entry of ``fail_if_header_matches`` / ``fail_if_header_not_matches`` (blackbox's
    names and semantics): a missing header fails the probe unless ``allow_missing``."""

    header: str
    regexp: str
    allow_missing: bool = False


@attrs.frozen
class BlackboxMatchers:
    """blackbox_exporter's four ``fail_if_*`` validators, compiled once.

    ``problems`` returns (validator, why) for each that fails, as the other validators do.
    """

    body_matches: tuple[re.Pattern[str], ...] = ()
    body_not_matches: tuple[re.Pattern[str], ...] = ()
    header_matches: tuple[tuple[HeaderMatch, re.Pattern[str]], ...] = ()
    header_not_matches: tuple[tuple[HeaderMatch, re.Pattern[str]], ...] = ()

    @classmethod
    def compile(
        cls,
        body_matches: tuple[str, ...],
        body_not_matches: tuple[str, ...],
        header_matches: tuple[HeaderMatch, ...],
        header_not_matches: tuple[HeaderMatch, ...],
    ) -> BlackboxMatchers:
        """``ValueError`` names the key of a bad regex or header name."""
        for key, entries in (
            ("fail_if_header_matches", header_matches),
            ("fail_if_header_not_matches", header_not_matches),
        ):
            for entry in entries:
                check_header_name(entry.header, key)
        return cls(
            tuple(_compile(p, "fail_if_body_matches") for p in body_matches),
            tuple(_compile(p, "fail_if_body_not_matches") for p in body_not_matches),
            tuple((e, _compile(e.regexp, "fail_if_header_matches")) for e in header_matches),
            tuple(
                (e, _compile(e.regexp, "fail_if_header_not_matches")) for e in header_not_matches
            ),
        )

    def names(self) -> tuple[str, ...]:
        """The validators configured, for the ``validation_failure`` map's fixed keys."""
        return tuple(
            name
            for name, on in (
                ("fail_if_body_matches", self.body_matches),
                ("fail_if_body_not_matches", self.body_not_matches),
                ("fail_if_header_matches", self.header_matches),
                ("fail_if_header_not_matches", self.header_not_matches),
            )
            if on
        )

    def problems(self, text: str, headers: httpx.Headers) -> list[tuple[str, str]]:
        failed: list[tuple[str, str]] = []
        for pattern in self.body_matches:
            if pattern.search(text):
                failed.append(("fail_if_body_matches", f"body matched /{pattern.pattern}/"))
                break
        for pattern in self.body_not_matches:
            if not pattern.search(text):
                failed.append(
                    ("fail_if_body_not_matches", f"body did not match /{pattern.pattern}/")
                )
                break
        for name, entries, fail_on_match in (
            ("fail_if_header_matches", self.header_matches, True),
            ("fail_if_header_not_matches", self.header_not_matches, False),
        ):
            problem = _header_problem(entries, headers, fail_on_match)
            if problem is not None:
                failed.append((name, problem))
        return failed


def _header_problem(
    entries: tuple[tuple[HeaderMatch, re.Pattern[str]], ...],
    headers: httpx.Headers,
    fail_on_match: bool,
) -> str | None:
    for entry, pattern in entries:
        values = headers.get_list(entry.header)
        if not values:
            if entry.allow_missing:
                continue
            return f"header {entry.header} missing"
        matched = [v for v in values if pattern.search(v)]
        if fail_on_match and matched:
            return f"header {entry.header} {quote(matched[0])} matched /{pattern.pattern}/"
        if not fail_on_match and not matched:
            return f"header {entry.header} {quote(values[0])} did not match /{pattern.pattern}/"
    return None


#: What :meth:`ResponseChecks.failures` passes on when no check reads the headers.
_NO_HEADERS = httpx.Headers()


@attrs.frozen
class ResponseChecks:
    """Every validator of one probe, applied to an :class:`~trioprobe._exchange.Exchange`
    (whichever transport produced it)."""

    pattern: re.Pattern[str] | None = None
    headers: tuple[HeaderCheck, ...] = ()
    json_paths: tuple[tuple[JSONPath, Any], ...] = ()
    json_subset: Mapping[str, Any] = attrs.field(factory=dict)
    blackbox: BlackboxMatchers = attrs.field(factory=BlackboxMatchers)
    #: The validators configured, in the order of the ``validation_failure`` map's keys.
    names: tuple[str, ...] = attrs.field(init=False)

    @names.default
    def _names(self) -> tuple[str, ...]:
        own = (
            ("regex", self.pattern is not None),
            ("header", bool(self.headers)),
            ("json_path", bool(self.json_paths)),
            ("json_subset", bool(self.json_subset)),
        )
        return tuple(name for name, on in own if on) + self.blackbox.names()

    def failures(self, exchange: Exchange) -> list[tuple[str, str]]:
        """(validator, why) for each validator the exchange's response fails; its body must
        be decoded already (:meth:`Exchange.decoded`)."""
        failed: list[tuple[str, str]] = []
        blackbox = self.blackbox.names()
        # Built only when a check reads the headers: ~25 calls per probe otherwise.
        headers = exchange.header_view() if self.headers or blackbox else _NO_HEADERS
        text = exchange.text() if self.pattern or blackbox else ""
        if self.pattern is not None and not self.pattern.search(text):
            failed.append(("regex", f"body did not match /{self.pattern.pattern}/"))
        for check in self.headers:
            problem = check.problem(headers)
            if problem is not None:
                failed.append(("header", problem))
                break
        if self.json_paths or self.json_subset:
            failed.extend(self._json_failures(exchange.body))
        if blackbox:
            failed.extend(self.blackbox.problems(text, headers))
        return failed

    def _json_failures(self, content: bytes) -> list[tuple[str, str]]:
        try:
            document = json.loads(content)
        except ValueError:
            reason = f"body is not JSON: {quote(content[:40].decode('utf-8', 'replace'))}"
            names = ("json_path",) * bool(self.json_paths) + ("json_subset",) * bool(
                self.json_subset
            )
            return [(name, reason) for name in names]
        failed: list[tuple[str, str]] = []
        for path, expected in self.json_paths:
            found, value = path.find(document)
            if not found:
                failed.append(("json_path", f"JSON {path.text}: {value} missing"))
                break
            if not json_equal(value, expected):
                failed.append(
                    ("json_path", f"JSON {path.text} is {quote(value)}, expected {quote(expected)}")
                )
                break
        if self.json_subset:
            problem = subset_mismatch(document, self.json_subset)
            if problem is not None:
                failed.append(("json_subset", f"JSON subset: {problem}"))
        return failed
