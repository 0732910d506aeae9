"""Where the CLI's log lines go: standard error (the default), or ``--log-file PATH``; as text
or as one JSON object per line (``--log-format json``).

Log lines are never written to the terminal behind the user's back: without this, the records
reached Python's last-resort handler, which writes to whatever ``sys.stderr`` is at the time,
and under the live table that is rich's proxy, which prints to the terminal (so ``2> run.err``
stayed empty, and INFO records, such as an alert's resolve, were not shown at all).

:class:`StderrHandler` looks ``sys.stderr`` up at each record, like the last-resort handler:
when standard error is the terminal the live table is drawn on, the live display redirects it
so that a log line prints above the table instead of tearing it; when standard error is
redirected, the live display leaves it alone (see ``_run``) and the line goes to the file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

from ._common import CLIError

__all__ = ["JSONFormatter", "StderrHandler", "add_log_options", "logging_to"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler[TextIO]):
    """A stream handler on whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass  # always the current sys.stderr


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message`` and, when there is one, ``exception`` (the formatted traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        default=None,
        help="append log lines (alert fires and resolves, warnings) to PATH, not standard error",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text (default) or as one JSON object per line",
    )


@contextlib.contextmanager
def logging_to(args: argparse.Namespace) -> Iterator[logging.Handler]:
    """Send the ``trioprobe`` loggers' INFO and above where ``args`` say, for the duration.

    The handler is removed again afterwards (``main`` may run several times in one process,
    as the tests do); records still propagate, so an embedding application's handlers see them.
    """
    handler: logging.Handler
    if args.log_file:
        try:
            handler = logging.FileHandler(args.log_file, encoding="utf-8")
        except OSError as exc:
            raise CLIError(
                f"argument --log-file: cannot open {args.log_file}: {exc.strerror or exc}"
            ) from None
    else:
        handler = StderrHandler()
    formatter = JSONFormatter() if args.log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    handler.setFormatter(formatter)
    logger = logging.getLogger("trioprobe")
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
