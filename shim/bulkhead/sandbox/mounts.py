"""mount(2)/umount2(2) through libc, and crash-only discovery of mounts under a directory."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MS_RDONLY = 0x1
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class MountError(OSError):
    """A mount or unmount failed; the message names the target and the options."""


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2) with a readable error."""
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise MountError(err, f"mount {fstype or 'bind'} {source} on {target} "
                              f"(options {data!r}): {os.strerror(err)}")


def umount(target: str, detach: bool = True) -> None:
    """umount2(2); a target that is not mounted is fine."""
    rc = _libc.umount2(target.encode(), MNT_DETACH if detach else 0)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            return
        raise MountError(err, f"umount {target}: {os.strerror(err)}")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below prefix, deepest first (the order to unmount them)."""
    prefix = os.path.realpath(prefix)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_all_under(prefix: str) -> list[str]:
    """Unmount everything below prefix; returns what was unmounted."""
    done = []
    for point in mounts_under(prefix):
        umount(point)
        done.append(point)
    return done
