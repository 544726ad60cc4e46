"""mount(2) and umount2(2) for the agent's own mounts (the share, pod /dev/shm, rootfs layers)."""

from __future__ import annotations

import functools
import os
from typing import Any

MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MNT_DETACH = 0x2


class MountError(OSError):
    """A mount or unmount failed; the message names the filesystem and the mount point."""


@functools.cache
def _libc() -> Any:
    """libc through ctypes, loaded on first use: a costly import under TCG that boot skips."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def mounted(target: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """True if something is mounted on target."""
    with open(mountinfo) as f:
        return any(line.split()[4] == target for line in f if len(line.split()) > 4)


def mount(source: str, target: str, fstype: str, flags: int, options: str) -> None:
    """mount(2) onto target, made first if missing."""
    os.makedirs(target, exist_ok=True)
    if _libc().mount(source.encode(), target.encode(), fstype.encode(), flags,
                     options.encode()) != 0:
        err = _errno()
        raise MountError(err, f"mount {fstype} {source!r} on {target}: {os.strerror(err)}")


def mount_once(source: str, target: str, fstype: str, flags: int, options: str) -> None:
    """mount(2), idempotent: a reconnecting shim asks again."""
    if not mounted(target):
        mount(source, target, fstype, flags, options)


def detach(target: str) -> None:
    """Lazily unmount target (and what is mounted below it); nothing mounted there is fine."""
    if _libc().umount2(target.encode(), MNT_DETACH) != 0:
        err = _errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone already
            raise MountError(err, f"umount {target}: {os.strerror(err)}")
