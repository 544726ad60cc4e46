"""Create a container's mount points inside its rootfs as the container would resolve them.

A read-only root must already hold every mount destination, because crun in the guest cannot
create them on a filesystem the host mounted read-only. Paths are resolved with openat2's
RESOLVE_IN_ROOT, so a symlink in the image (tenant content) stays inside the rootfs.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from bulkhead.libc import libc

_OPENAT2 = 437  # the same number on every architecture (Linux 5.6)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_XDEV = 0x01
RESOLVE_IN_ROOT = 0x10


@functools.cache
def _openat2() -> Any:
    """openat2(2) through ctypes (Python 3.11 has no wrapper)."""
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                    ("resolve", ctypes.c_uint64)]

    lib = libc()

    def call(dir_fd: int, path: str, flags: int) -> int:
        how = OpenHow(flags | os.O_CLOEXEC, 0,
                      RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
        fd = lib.syscall(_OPENAT2, dir_fd, path.encode(), ctypes.byref(how),
                          ctypes.sizeof(how))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(fd)

    return call


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    """Open path as seen from root_fd being "/" (symlinks cannot leave it)."""
    return int(_openat2()(root_fd, path, flags))


def make_mount_point(root_fd: int, destination: str, is_file: bool) -> None:
    """mkdir -p the destination inside root_fd (a file for a file bind); existing ones stay."""
    parts = [p for p in destination.split("/") if p and p != "."]
    if not parts or ".." in parts:
        return
    parent = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            try:
                fd = open_in_root(root_fd, "/".join(parts[: i + 1]))
            except FileNotFoundError:
                if last and is_file:
                    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                     0o644, dir_fd=parent))
                    return
                os.mkdir(name, 0o755, dir_fd=parent)
                fd = open_in_root(root_fd, "/".join(parts[: i + 1]))
            os.close(parent)
            parent = fd
    finally:
        os.close(parent)


def destinations(mounts: list[dict[str, Any]], file_binds: set[str]) -> list[tuple[str, bool]]:
    """(destination, is_file) of each mount not inside an earlier one (crun makes those)."""
    out: list[tuple[str, bool]] = []
    seen: list[str] = []
    for m in mounts:
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest.startswith("/"):
            continue
        norm = os.path.normpath(dest)
        if any(norm == s or norm.startswith(s.rstrip("/") + "/") for s in seen):
            continue
        seen.append(norm)
        out.append((norm, norm in file_binds))
    return out
