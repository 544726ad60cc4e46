"""Mount-table helpers, so test instances can prove (and restore) that they left no mounts."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from bulkhead.sandbox.mounts import MountPoint, mount_points_under, parse_mountinfo

MOUNTINFO = Path("/proc/self/mountinfo")
MNT_DETACH = 2


Mount = MountPoint


def current_mounts() -> list[Mount]:
    return parse_mountinfo(MOUNTINFO.read_text())


def mounts_under(*dirs: str | os.PathLike[str]) -> list[Mount]:
    """Mounts at or below any of dirs, deepest first (the order to unmount them in)."""
    return mount_points_under(*dirs)


def _umount2(path: str, flags: int) -> int:
    """umount2(2) via libc; returns 0 or the errno."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.umount2(os.fsencode(path), flags) == 0:
        return 0
    return ctypes.get_errno()


def unmount_under(*dirs: str | os.PathLike[str], rounds: int = 5) -> list[Mount]:
    """Unmount everything below dirs, deepest first, lazily if busy; returns what is left."""
    for _ in range(rounds):
        left = mounts_under(*dirs)
        if not left:
            return []
        for m in left:
            if _umount2(m.mount_point, 0) != 0:
                _umount2(m.mount_point, MNT_DETACH)
    return mounts_under(*dirs)
