"""File sources: ``targets_file`` (one target per line) and ``file_sd`` (Prometheus's format).

Both poll the file's stamp (mtime, size, inode) every ``poll`` seconds with a ``stat`` and
re-read it when it changed, the open, the read and the parse in a worker thread. A read is used
only if the file did not change during it nor in the ``settle`` seconds after it, so a rewrite
in place (truncate, then write) is never taken for the file's new content; and a file that reads
empty where it had targets must read empty at two polls in a row before the targets are dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from ._files import FileChanged, Stamp, path_stamp, read_regular
from ._model import Target
from ._parse import (
    CheckFn,
    Parsed,
    SourceError,
    load_document,
    parse_sd_document,
    parse_target_lines,
)
from ._source import Feed, Source

__all__ = ["FileSDSource", "MAX_TARGETS_BYTES", "TargetsFileSource"]

logger = logging.getLogger("trioprobe.targets")

#: The largest targets or file_sd file read (about 20,000 URLs).
MAX_TARGETS_BYTES = 4 * 1024 * 1024
#: Seconds between stamp checks, and the quiet time a read must be followed by.
DEFAULT_POLL = 1.0
DEFAULT_SETTLE = 0.05


class _FileSource(Source):
    def __init__(
        self,
        path: str | Path,
        check: CheckFn | None = None,
        *,
        poll: float = DEFAULT_POLL,
        settle: float = DEFAULT_SETTLE,
    ) -> None:
        self.path = Path(path)
        self.check = check
        self.poll = poll
        self.settle = settle
        self._stamp: Stamp | None = None
        # The stamp of an empty read not yet trusted (see the module doc).
        self._empty_at: Stamp | None = None
        #: Reads thrown away because the file changed during or just after them.
        self.unsettled_reads = 0

    def describe(self) -> str:
        return str(self.path)

    def parse(self, data: bytes) -> Parsed:
        raise NotImplementedError

    def read(self) -> tuple[Parsed, Stamp]:
        """Read and parse the file (blocking: a worker thread's job, or start-up's)."""
        data, stamp = read_regular(self.path, MAX_TARGETS_BYTES)
        return self.parse(data), stamp

    def preload(self) -> Parsed:
        parsed, self._stamp = self.read()
        return parsed

    async def watch(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        while True:
            try:
                await self._poll_once(feed)
            except (OSError, SourceError) as exc:
                feed.fail(_message(exc))
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(self.poll)

    async def _poll_once(self, feed: Feed) -> None:
        # A stat is metadata (microseconds, and it never blocks on a FIFO or a device), so it
        # runs here; the open, read and parse, which can take milliseconds, run in a thread.
        # A thread only when the file changed also keeps mock-clock tests deterministic.
        stamp = path_stamp(self.path)
        if stamp == self._stamp and feed.current is not None:
            return
        try:
            # Abandoned on cancel: the result would be thrown away, so shutdown never waits.
            (targets, bad), stamp = await trio.to_thread.run_sync(self.read, abandon_on_cancel=True)
            await trio.sleep(self.settle)
            if path_stamp(self.path) != stamp:
                raise FileChanged("the file changed just after it was read")
        except FileChanged:
            # Being rewritten: not a failure, and not the file's content. Read it next poll.
            self.unsettled_reads += 1
            return
        if not targets and feed.current and self._empty_at != stamp:
            self._empty_at = stamp  # trusted if it still reads the same at the next poll
            return
        self._empty_at = None
        self._stamp = stamp
        feed.publish(targets, bad)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc)


class TargetsFileSource(_FileSource):
    """``targets_file``: one target per line, ``#`` comments, duplicates counted once."""

    kind = "targets_file"

    def parse(self, data: bytes) -> Parsed:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self.path}: not UTF-8 text: {exc}") from None
        return parse_target_lines(text, str(self.path), self.check)


class FileSDSource(_FileSource):
    """``file_sd``: Prometheus's file_sd JSON (``.json``) or YAML (``.yml``/``.yaml``) file."""

    kind = "file_sd"

    def __init__(
        self,
        path: str | Path,
        check: CheckFn | None = None,
        *,
        template: str = "{address}",
        poll: float = DEFAULT_POLL,
        settle: float = DEFAULT_SETTLE,
    ) -> None:
        super().__init__(path, check, poll=poll, settle=settle)
        self.template = template

    def parse(self, data: bytes) -> Parsed:
        where = str(self.path)
        yaml = self.path.suffix.lower() in (".yml", ".yaml")
        document = load_document(data, where, yaml=yaml)
        targets, bad = parse_sd_document(document, where, self.check, self.template)
        # Prometheus adds the file's path as a meta label (dropped from exports like every __).
        meta = {"__meta_filepath": where}
        return tuple(Target(t.address, {**t.label_map(), **meta}) for t in targets), bad
