"""What every target source is: a watcher task that feeds a probe's :class:`ProbeTargets`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, Protocol

import trio

from ._model import Target

__all__ = ["Feed", "Source"]


class Feed(Protocol):
    """How a source reports to its probe's target set (one feed per source)."""

    def publish(self, targets: tuple[Target, ...], bad: Mapping[str, str] | None = None) -> None:
        """These are the source's targets now (``bad``: entries skipped, address -> why)."""

    def fail(self, message: str) -> None:
        """The source could not be read: counted, logged (rate-limited); targets are kept."""

    @property
    def current(self) -> tuple[Target, ...] | None:
        """What the source last published (``None`` before its first good read)."""


class Source(ABC):
    """A source of targets for one probe.

    :meth:`watch` is the source's one task: it reads (blocking work in ``trio.to_thread``),
    calls ``feed.publish`` with every new list and ``feed.fail`` for every failed attempt,
    calls ``task_status.started()`` after its first attempt, and runs until cancelled. A source
    never publishes an empty list because something failed: failing is :meth:`Feed.fail`.
    """

    #: The config key that makes this source: the ``source`` label of its error counter.
    kind: ClassVar[str]

    @abstractmethod
    def describe(self) -> str:
        """Where the targets come from, for messages (a path, a URL...)."""

    def preload(self) -> tuple[tuple[Target, ...], dict[str, str]] | None:
        """Read the targets now, blocking, raising what is wrong (start-up checks); ``None`` for
        a source that can only be read by its watcher (the network ones)."""
        return None

    @abstractmethod
    async def watch(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...
