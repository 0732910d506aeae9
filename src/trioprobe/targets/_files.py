"""Reading a targets file safely: never blocking on a FIFO, never taking a half-written file.

Both matter to a long-running prober: a FIFO (or a device) opened for reading blocks until a
writer comes, which once hung ``run`` past SIGTERM and ``check`` for good; and a file rewritten in
place (truncate, then write) read at the wrong moment is empty or cut, which once read as "every
target removed" (30 false resolves and 30 false fires in 20 s). Everything here is blocking and
runs in a worker thread (``trio.to_thread``), never on the Trio thread.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["FileChanged", "NotRegularFile", "Stamp", "read_regular", "stamp_of"]

#: (mtime in ns, size, inode): what changes when a file is rewritten, in place or replaced.
Stamp = tuple[int, int, int]


class NotRegularFile(OSError):
    """The path is a FIFO, a device, a directory or a socket: refused before anything blocks."""


class FileChanged(OSError):
    """The file changed while it was read: the text may be partial, so it is not used."""


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def path_stamp(path: str | os.PathLike[str]) -> Stamp:
    """The file's stamp (a ``stat``: blocking on a slow file system, so call it in a thread)."""
    return stamp_of(os.stat(path))


def read_regular(path: str | os.PathLike[str], limit: int) -> tuple[bytes, Stamp]:
    """The bytes of regular file ``path`` (at most ``limit``) and its stamp, read consistently.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` before any read, so a FIFO
    is refused (:class:`NotRegularFile`) without waiting for a writer. If the file's stamp after
    the read differs from before, or fewer bytes came than its size said, the read overlapped a
    rewrite and :class:`FileChanged` is raised. ``EFBIG`` past ``limit``.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(errno.EINVAL, f"not a regular file ({_kind(st.st_mode)})", str(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        # Checked again on the descriptor: the path may have been swapped since the stat.
        if not stat.S_ISREG(before.st_mode):
            raise NotRegularFile(
                errno.EINVAL, f"not a regular file ({_kind(before.st_mode)})", str(path)
            )
        if before.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than the {limit}-byte limit", str(path))
        chunks = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"larger than the {limit}-byte limit", str(path))
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if stamp_of(before) != stamp_of(after) or len(data) != after.st_size:
        raise FileChanged(errno.EAGAIN, "the file changed while it was read", str(path))
    return data, stamp_of(after)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"
