"""``TargetsFile``: the targets callable before the targets layer, kept for library users.

Deprecated (CHANGELOG.md): it stats the file on the caller's thread at every call and reads it
there when it changed. The runner uses :class:`~trioprobe.targets.ProbeTargets` with a
:class:`~trioprobe.targets.TargetsFileSource` instead, whose watcher does that in a thread.
It does share the safe read: a FIFO or device is refused, a read that overlapped a rewrite is
not used, and an empty read where there were targets is trusted only when seen twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ._files import FileChanged, Stamp, path_stamp
from ._parse import CheckFn, SourceError
from .files import TargetsFileSource

__all__ = ["TargetsFile"]

logger = logging.getLogger("trioprobe.config")


class TargetsFile:
    """A target list read from a file, re-read whenever the file's stamp changes (deprecated).

    If the file becomes unreadable, the last good list is kept and the problem is logged once.
    A bad line is a :class:`SourceError` at construction; on a re-read it is logged and
    skipped, and listed in :attr:`errors`.
    """

    def __init__(self, path: Path, check: CheckFn | None = None) -> None:
        self.path = Path(path)
        self._source = TargetsFileSource(self.path, check)
        self._stamp: Stamp | None = None
        self._empty_at: Stamp | None = None
        self._targets: tuple[str, ...] = ()
        self._warned = False
        #: Bad lines of the last read: target -> ``"file:line: why"``.
        self.errors: dict[str, str] = {}
        self.reload(strict=True)

    def reload(self, *, strict: bool = False) -> None:
        """Read the file now; ``OSError`` if it cannot be read, with ``strict`` a
        :class:`SourceError` for a bad target."""
        (targets, errors), stamp = self._source.read()
        if errors and strict:
            raise SourceError("\n".join(errors.values()))
        if not targets and self._targets and self._empty_at != stamp:
            self._empty_at = stamp  # maybe a rewrite in progress: trusted if seen again
            return
        self._empty_at = None
        for target, message in errors.items():
            if target not in self.errors:
                logger.warning("%s (skipped)", message)
        self.errors = errors
        self._targets = tuple(t.address for t in targets)
        self._stamp = stamp

    def __call__(self) -> Sequence[str]:
        try:
            if path_stamp(self.path) != self._stamp:
                self.reload()
                self._warned = False
        except FileChanged:
            pass  # being rewritten: the next call reads it
        except (OSError, SourceError) as exc:
            if not self._warned:
                logger.warning(
                    "cannot re-read targets file %s (keeping %d targets): %s",
                    self.path,
                    len(self._targets),
                    exc,
                )
                self._warned = True
        return self._targets
