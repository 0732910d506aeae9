"""What every CLI command module shares: the user-error type."""

from __future__ import annotations

__all__ = ["CLIError", "first_os_error"]


class CLIError(Exception):
    """A user mistake (bad argument, unreadable file, bad config).

    ``main`` prints it as one line and exits with code 2, without a traceback.
    """


def first_os_error(exc: BaseException) -> OSError | None:
    """The first ``OSError`` in ``exc`` or its exception groups (a server's bind failure arrives
    wrapped in the groups of the nurseries it crossed), or ``None``."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_os_error(inner)
            if found is not None:
                return found
    return None
