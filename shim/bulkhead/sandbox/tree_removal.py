"""Remove a directory tree from a directory fd: never follow a symlink, never cross a mount.

What the guest left in the share is removed entry by entry from dir fds opened with
O_NOFOLLOW, so a symlink it planted is unlinked, not followed; a directory on another device
or mount (a bind of the same filesystem too: mount ids are compared) is left in place and
reported, never emptied.
"""

from __future__ import annotations

import os
import stat

from bulkhead.sandbox.mount_fd import mount_id

_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 256  # deeper trees are left (and reported) rather than recursed into


def remove_tree(parent_fd: int, name: str, where: str) -> list[str]:
    """Remove parent_fd/name and all below it on the same device; returns what was left."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return []
    left: list[str] = []
    mnt = _mount_id_at(parent_fd, name)
    _empty(parent_fd, name, (st.st_dev, mnt), f"{where}/{name}", left, 0)
    if not left:
        try:
            os.rmdir(name, dir_fd=parent_fd)
        except OSError as exc:
            left.append(f"{where}/{name} ({exc.strerror})")
    return left


def _mount_id_at(dir_fd: int, name: str) -> int:
    """The mount id of dir_fd/name itself (a mount point's, when one is mounted there)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return mount_id(fd)
    finally:
        os.close(fd)


def _empty(parent_fd: int, name: str, home: tuple[int, int], where: str, left: list[str],
           depth: int) -> None:
    """Remove everything inside parent_fd/name that lies on home (device, mount id)."""
    try:
        fd = os.open(name, _DIR_OPEN, dir_fd=parent_fd)
    except OSError as exc:
        left.append(f"{where} ({exc.strerror})")
        return
    try:
        if (os.fstat(fd).st_dev, mount_id(fd)) != home:
            left.append(f"{where} (another mount)")
            return
        for entry in os.scandir(fd):
            _remove_entry(fd, entry.name, home, f"{where}/{entry.name}", left, depth)
    finally:
        os.close(fd)


def _remove_entry(dir_fd: int, name: str, home: tuple[int, int], where: str, left: list[str],
                  depth: int) -> None:
    """One entry: unlink a non-directory, empty and rmdir a directory on the same device."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            return
        if st.st_dev != home[0] or depth >= MAX_DEPTH:
            left.append(f"{where} ({'another mount' if st.st_dev != home[0] else 'too deep'})")
            return
        before = len(left)
        _empty(dir_fd, name, home, where, left, depth + 1)
        if len(left) == before:
            os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        left.append(f"{where} ({exc.strerror})")
