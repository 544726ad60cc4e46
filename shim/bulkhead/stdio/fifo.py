"""Opening a stdio FIFO that containerd's client named, and nothing else at that path.

The path comes from the task API: a regular file there would let a client point a container's
stdin at any host file (or its output over one), and opening a device can act on it. As
containerd's own fifo package does, only a FIFO is accepted, checked before the open and again
on the fd (the same inode), so a swap in between is caught too.
"""

from __future__ import annotations

import os
import stat

KINDS = ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
         (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
         (stat.S_ISSOCK, "socket"))  # os.stat follows links: a link is judged by its target


class NotAFifo(OSError):
    """The stdio path exists but is not a FIFO (or changed while it was opened)."""


def kind(mode: int) -> str:
    """What a file mode names, in words."""
    return next((name for test, name in KINDS if test(mode)), "special file")


def open_fifo(path: str, flags: int) -> int:
    """A non-blocking fd on the FIFO at path; OSError (NotAFifo) for anything else there."""
    before = os.stat(path)
    if not stat.S_ISFIFO(before.st_mode):
        raise NotAFifo(f"{path} is a {kind(before.st_mode)}, not a FIFO")
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISFIFO(
            after.st_mode):
        os.close(fd)
        raise NotAFifo(f"{path} was replaced while it was opened")
    return fd
