"""Files and sockets only root may touch, with their modes set explicitly (never the umask).

A sandbox's state directory holds QMP (which is host root), the agent channels and the debug
shell: whatever the umask of whoever started containerd, each is created 0600 in a 0700
directory, never through a link.
"""

from __future__ import annotations

import os
import socket

FILE_MODE = 0o600
DIR_MODE = 0o700
_CREATE = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def open_private(path: str, flags: int = os.O_WRONLY | os.O_TRUNC) -> int:
    """An fd on path, created 0600 if new and set to 0600 if not; a link there is refused."""
    fd = os.open(path, flags | _CREATE, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of data is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_private(path: str, data: bytes) -> None:
    """Replace path atomically with data, 0600: a reader sees the old file or the new one."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | _CREATE, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        write_all(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def make_private_dir(path: str) -> None:
    """path (and missing parents) as a 0700 directory, whatever it was made with before."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    os.chmod(path, DIR_MODE, follow_symlinks=False)


def bind_private(sock: socket.socket, path: str) -> None:
    """Bind a unix socket at path and make it 0600 before anyone is let in (listen)."""
    sock.bind(path)
    os.chmod(path, FILE_MODE)
