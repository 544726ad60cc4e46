"""mount(2) flags, and discovery of mounts under a directory from /proc/self/mountinfo."""

from __future__ import annotations

import os
from dataclasses import dataclass

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000

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
