"""What every CLI command module shares: the user-error type."""

from __future__ import annotations

from ..validators import SECONDS

__all__ = ["CLIError", "positive_seconds"]


class CLIError(Exception):
    """A user mistake (bad argument, unreadable file, bad config), or several at once.

    ``main`` prints each message as one ``trioprobe: error:`` line and exits with code 2, without
    a traceback. Several messages come from an exception group: every error of it is reported,
    not only the first (two servers failing to bind are two lines).
    """

    def __init__(self, *messages: str) -> None:
        super().__init__(*messages)
        self.messages = messages

    def __str__(self) -> str:
        return "\n".join(self.messages)


#: An argparse type: a finite number of seconds >= 1 ms (the same range as durations in the config).
positive_seconds = SECONDS.parse
