"""What every CLI command module shares: the user-error type and the signal watch."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Awaitable, Callable

import trio

from .._durations import parse_duration
from ..validators import SECONDS, Range

__all__ = ["CLIError", "positive_seconds", "seconds_in", "watch_signals"]


class CLIError(Exception):
    """A user mistake (bad argument, unreadable file, bad config), or several at once.

    ``main`` prints each message as one ``trioprobe: error:`` line and exits with code 2, without
    a traceback. Several messages come from an exception group: every error of it is reported,
    not only the first (two servers failing to bind are two lines).
    """

    def __init__(self, *messages: str) -> None:
        super().__init__(*messages)
        # A ConfigError's text holds one problem per line: each gets its own prefix, so that
        # every line on stderr reads `trioprobe: error: ...` (one line per problem, always).
        self.messages = tuple(
            line for message in messages for line in (message.splitlines() or [message])
        )

    def __str__(self) -> str:
        return "\n".join(self.messages)


def seconds_in(bounds: Range) -> Callable[[str], float]:
    """An argparse ``type`` for a duration flag: ``5s``, ``500ms``, ``1m30s`` or plain seconds,
    within ``bounds`` (the same forms and ranges as durations in the config)."""

    def parse(text: str) -> float:
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        problem = bounds.problem(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


#: An argparse type: a duration of at least 1 ms (the same range as durations in the config).
positive_seconds = seconds_in(SECONDS)


async def watch_signals(
    *,
    reload: Callable[[], Awaitable[object]],
    drain: Callable[[], object],
    stop: Callable[[], object],
    draining: str,
) -> None:
    """How ``run`` answers signals, with one worker or several: the first SIGINT/SIGTERM drains
    (``draining`` is printed), a second one stops at once, SIGHUP reloads the config.

    Each reload runs in its own task, so a slow reload never delays a shutdown signal.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        count = 0
        async with trio.open_nursery() as reloads:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reloads.start_soon(reload)
                    continue
                count += 1
                if count == 1:
                    print(draining, file=sys.stderr)
                    drain()
                else:
                    stop()
