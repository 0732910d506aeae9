"""Keeping configured secrets out of every message: one registry, one scrubber.

Why fragments, not just the whole secret: error texts quote what a target sent, cut at 40-60
characters. A target that echoes the request puts the bearer token (or ``base64(user:password)``)
in the body; the quote then ends part-way through it, and a redaction that replaces only the whole
secret left 49 of an 83-character token on the status page, in the logs and in notices. Here any
run of at least :data:`MIN_FRAGMENT` characters that also occurs in a registered secret (in any of
its forms: as given, base64, the basic-auth pair's base64) is replaced by ``<secret>``, wherever
the text came from.

Where it applies: :func:`scrub` is called on every ``ProbeResult.error`` (so the live table,
``/status``, ``/status.json``, InfluxDB and alert notices only ever see scrubbed text), on the
validators' quotes before they are cut, and, once a secret is registered, on every log record
(a record factory: logging made anywhere in the process goes through it).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["MIN_FRAGMENT", "REDACTED", "register_secret", "scrub", "secret_forms"]

#: The shortest run of a secret's characters that is redacted on its own. Shorter runs occur
#: in ordinary text too often to mean anything; a secret shorter than this is redacted whole.
MIN_FRAGMENT = 6
REDACTED = "<secret>"

_lock = threading.Lock()
_secrets: set[str] = set()
# Every MIN_FRAGMENT-long substring of every registered form: a message is scanned against it.
_grams: frozenset[str] = frozenset()
_short: tuple[str, ...] = ()
_factory_installed = False


def secret_forms(secret: str, *, user: str | None = None) -> list[str]:
    """The forms a secret travels in: as given, base64 of it, and with ``user`` the basic-auth
    pair ``base64(user:secret)``."""
    forms = [secret, base64.b64encode(secret.encode()).decode("ascii")]
    if user is not None:
        forms.append(base64.b64encode(f"{user}:{secret}".encode()).decode("ascii"))
    return [form for form in forms if form]


def register_secret(forms: Iterable[str]) -> None:
    """Redact ``forms`` (see :func:`secret_forms`) from every message from now on."""
    global _grams, _short
    with _lock:
        new = {form for form in forms if form and form not in _secrets}
        if not new:
            return
        _secrets.update(new)
        grams = set(_grams)
        short = list(_short)
        for form in new:
            if len(form) < MIN_FRAGMENT:
                short.append(form)
            else:
                grams.update(
                    form[i : i + MIN_FRAGMENT] for i in range(len(form) - MIN_FRAGMENT + 1)
                )
        _grams, _short = frozenset(grams), tuple(sorted(short, key=len, reverse=True))
        _install_record_factory()


def scrub(text: str) -> str:
    """``text`` with every run of a registered secret's characters (at least
    :data:`MIN_FRAGMENT` long, or a whole short secret) replaced by ``<secret>``."""
    grams, short = _grams, _short
    if not grams and not short:
        return text
    if REDACTED in text:
        # Already scrubbed parts stay as they are: scrubbing twice must not change them (a
        # secret containing "secret" would otherwise eat into the marker itself).
        return REDACTED.join(_scrub_part(part, grams, short) for part in text.split(REDACTED))
    return _scrub_part(text, grams, short)


def _scrub_part(text: str, grams: frozenset[str], short: tuple[str, ...]) -> str:
    for secret in short:
        text = text.replace(secret, REDACTED)
    if len(text) < MIN_FRAGMENT or not grams:
        return text
    covered = bytearray(len(text))
    for i in range(len(text) - MIN_FRAGMENT + 1):
        if text[i : i + MIN_FRAGMENT] in grams:
            covered[i : i + MIN_FRAGMENT] = b"\1" * MIN_FRAGMENT
    if not any(covered):
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if covered[i]:
            out.append(REDACTED)
            while i < len(text) and covered[i]:
                i += 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _install_record_factory() -> None:
    """Scrub every log record's message, whoever logs it (only once a secret exists)."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return record  # a broken format: logging reports it itself
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
