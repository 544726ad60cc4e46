"""mount(2)/umount2(2) through libc, and crash-only discovery of mounts under a directory."""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from typing import Any

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2

@functools.cache
def _libc() -> Any:
    """libc through ctypes, loaded on first (un)mount: `delete` usually finds nothing mounted
    and should not pay for importing ctypes."""
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


class MountError(OSError):
    """A mount or unmount failed; the message names the target and the options."""


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2) with a readable error."""
    import ctypes

    rc = _libc().mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = _errno()
        raise MountError(err, f"mount {fstype or 'bind'} {source} on {target} "
                              f"(options {data!r}): {os.strerror(err)}")


def umount(target: str, detach: bool = True) -> None:
    """umount2(2); a target that is not mounted is fine."""
    rc = _libc().umount2(target.encode(), MNT_DETACH if detach else 0)
    if rc != 0:
        err = _errno()
        if err in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            return
        raise MountError(err, f"umount {target}: {os.strerror(err)}")


@dataclass(frozen=True)
class MountPoint:
    """One line of /proc/self/mountinfo, reduced to what cleanup needs."""

    mount_id: int
    mount_point: str
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    out: list[str] = []
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountPoint]:
    """Parse mountinfo text (format in proc(5)); unparsable lines are skipped."""
    found: list[MountPoint] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        rest = right.split()
        if not sep or len(fields) < 5 or len(rest) < 2:
            continue
        found.append(MountPoint(int(fields[0]), _unescape(fields[4]), rest[0],
                                _unescape(rest[1])))
    return found


def _is_under(path: str, base: str) -> bool:
    base = base.rstrip("/") or "/"
    return path == base or path.startswith(base + "/")


def mount_points_under(*dirs: str | os.PathLike[str]) -> list[MountPoint]:
    """Mounts at or below any of dirs, deepest first (the order to unmount them in)."""
    bases = [os.path.realpath(d) for d in dirs]
    with open("/proc/self/mountinfo") as f:
        table = parse_mountinfo(f.read())
    found = [m for m in table if any(_is_under(m.mount_point, b) for b in bases)]
    return sorted(found, key=lambda m: (m.mount_point.count("/"), m.mount_id), reverse=True)


def mounts_under(prefix: str) -> list[str]:
    """Mount point paths at or below prefix, deepest first."""
    return [m.mount_point for m in mount_points_under(prefix)]


def unmount_all_under(prefix: str) -> list[str]:
    """Unmount everything below prefix; returns what was unmounted."""
    done = []
    for point in mounts_under(prefix):
        umount(point)
        done.append(point)
    return done


def remove_mounted_tree(path: str) -> None:
    """Unmount everything at or below path, then delete it (never across a mount)."""
    unmount_all_under(path)
    shutil.rmtree(path, ignore_errors=True)
