"""File-tree operations the layers share: remove, measure, hard-link."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def rmtree(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def du(path: Path) -> int:
    """Sum of the sizes of the regular files under path (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link src to dst, or copy it where that is not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
