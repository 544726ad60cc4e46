"""Mount-table helpers, so test instances can prove (and restore) that they left no mounts."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
MNT_DETACH = 2


@dataclass(frozen=True)
class Mount:
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


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text (format in proc(5)); unparsable lines are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        rest = right.split()
        if not sep or len(fields) < 5 or len(rest) < 2:
            continue
        mounts.append(Mount(int(fields[0]), _unescape(fields[4]), rest[0], _unescape(rest[1])))
    return mounts


def current_mounts() -> list[Mount]:
    return parse_mountinfo(MOUNTINFO.read_text())


def _is_under(path: str, base: str) -> bool:
    base = base.rstrip("/") or "/"
    return path == base or path.startswith(base + "/")


def mounts_under(*dirs: str | os.PathLike[str]) -> list[Mount]:
    """Mounts at or below any of dirs, deepest first (the order to unmount them in)."""
    bases = [os.path.realpath(d) for d in dirs]
    found = [m for m in current_mounts() if any(_is_under(m.mount_point, b) for b in bases)]
    return sorted(found, key=lambda m: (m.mount_point.count("/"), m.mount_id), reverse=True)


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
