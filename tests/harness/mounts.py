"""Unmounting what a test run left mounted (listing mounts is bulkhead.sandbox.mounts')."""

from __future__ import annotations

import ctypes
import os

from bulkhead.libc import libc
from bulkhead.sandbox.mounts import MountPoint, mount_points_under

MNT_DETACH = 2


def _umount2(path: str, flags: int) -> int:
    """umount2(2); returns 0 or the errno."""
    if libc().umount2(os.fsencode(path), flags) == 0:
        return 0
    return ctypes.get_errno()


def unmount_leftovers(*dirs: str | os.PathLike[str], rounds: int = 5) -> list[MountPoint]:
    """Unmount everything below dirs, deepest first, lazily if busy; returns what is left."""
    for _ in range(rounds):
        left = mount_points_under(*dirs)
        if not left:
            return []
        for m in left:
            if _umount2(m.mount_point, 0) != 0:
                _umount2(m.mount_point, MNT_DETACH)
    return mount_points_under(*dirs)


def mount_options(mount_point: os.PathLike[str] | str) -> set[str]:
    """The per-mount options (mountinfo's field 6: ro, nosuid, nodev, ...) of the mount there."""
    for m in mount_points_under(mount_point):
        if m.mount_point == os.fspath(mount_point):
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    fields = line.split()
                    if int(fields[0]) == m.mount_id:
                        return set(fields[5].split(","))
    raise AssertionError(f"{mount_point} is not mounted")
