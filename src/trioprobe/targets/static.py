"""The ``targets`` list of a probe (and any fixed list or callable a library user passes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import trio

from ._model import Target
from ._source import Feed, Source

__all__ = ["CallableSource", "StaticSource"]


class StaticSource(Source):
    """A fixed list: published once, never fails."""

    kind = "targets"

    def __init__(self, targets: Iterable[Target | str]) -> None:
        self.targets = tuple(t if isinstance(t, Target) else Target(t) for t in targets)

    def describe(self) -> str:
        return f"{len(self.targets)} listed targets"

    def preload(self) -> tuple[tuple[Target, ...], dict[str, str]]:
        return self.targets, {}

    async def watch(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        feed.publish(self.targets)
        task_status.started()


class CallableSource(Source):
    """A library user's ``targets()`` callable (the API before the targets layer), polled every
    ``poll`` seconds on the Trio thread: it is the caller's to keep cheap."""

    kind = "callable"

    def __init__(self, targets: Callable[[], Sequence[str]], poll: float = 1.0) -> None:
        self.targets = targets
        self.poll = poll

    def describe(self) -> str:
        return repr(self.targets)

    def preload(self) -> tuple[tuple[Target, ...], dict[str, str]]:
        return tuple(Target(t) for t in dict.fromkeys(self.targets())), {}

    async def watch(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        while True:
            feed.publish(self.preload()[0])
            task_status.started()
            await trio.sleep(self.poll)
