"""What every CLI command module shares: the user-error type."""

from __future__ import annotations

from typing import TypeVar

from ..validators import SECONDS

E = TypeVar("E", bound=BaseException)

__all__ = ["CLIError", "find_error", "first_os_error", "positive_seconds"]


class CLIError(Exception):
    """A user mistake (bad argument, unreadable file, bad config).

    ``main`` prints it as one line and exits with code 2, without a traceback.
    """


def find_error(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` in ``exc`` or its exception groups, or ``None``.

    An error raised in a task arrives wrapped in the exception groups of every nursery it
    crossed; a command looks inside them for the one it can explain to the user.
    """
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_error(inner, kind)
            if found is not None:
                return found
    return None


def first_os_error(exc: BaseException) -> OSError | None:
    """The first ``OSError`` in ``exc`` or its groups (a server's bind failure), or ``None``."""
    return find_error(exc, OSError)


#: An argparse type: a finite number of seconds >= 1 ms (the same range as durations in the config).
positive_seconds = SECONDS.parse
