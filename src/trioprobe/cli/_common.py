"""What every CLI command module shares: the user-error type."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A user mistake (bad argument, unreadable file, bad config).

    ``main`` prints it as one line and exits with code 2, without a traceback.
    """
