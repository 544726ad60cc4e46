"""The host-wide directories containerd, ctr and runc create as a side effect of a private
instance's runs (/run/containerd/s, fifo and runc dirs, per-namespace cgroup v1 dirs): those that
did not exist when the first live instance of this process started are removed, if empty, when
the last one stops, so a private containerd leaves the host as it found it."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

CONTAINERD_RUN_DIR = Path("/run/containerd")  # compile-time default shared by every containerd
SHIM_SOCKET_DIR = CONTAINERD_RUN_DIR / "s"
FIFO_DIR = CONTAINERD_RUN_DIR / "fifo"
SYSTEM_ADDRESS = CONTAINERD_RUN_DIR / "containerd.sock"
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")

_lock = threading.Lock()
_live_instances: set[str] = set()
_created: set[Path] = set()
_fifo_dirs_before: set[str] = set()  # FIFO_DIR entries when the first instance began


def cgroup_controllers() -> list[Path]:
    """The cgroup v1 hierarchies (and the hybrid unified one) mounted under /sys/fs/cgroup."""
    if not CGROUP_V1_ROOT.is_dir():
        return []
    found = [c for c in sorted(CGROUP_V1_ROOT.iterdir()) if not c.is_symlink()]
    return [c for c in found if c.is_dir()]


def candidates(namespaces: Iterable[str]) -> list[Path]:
    """The shared dirs runs in these containerd namespaces may create."""
    dirs = [CONTAINERD_RUN_DIR, SHIM_SOCKET_DIR, FIFO_DIR, CONTAINERD_RUN_DIR / "runc"]
    controllers = cgroup_controllers()
    for ns in dict.fromkeys(namespaces):
        dirs.append(CONTAINERD_RUN_DIR / "runc" / ns)
        dirs += [ctl / ns for ctl in controllers]
    return dirs


def listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def register(name: str, dirs: Iterable[Path]) -> None:
    """An instance starts: remember which of its shared dirs do not exist yet."""
    with _lock:
        if not _live_instances:
            _created.clear()
            _fifo_dirs_before.clear()
            _fifo_dirs_before.update(listdir(FIFO_DIR))
        _created.update(p for p in dirs if not p.exists())
        _live_instances.add(name)


def unregister(name: str) -> None:
    """The last instance to stop removes the (empty) shared dirs that runs created."""
    with _lock:
        _live_instances.discard(name)
        if _live_instances:
            return
        if not SYSTEM_ADDRESS.exists():  # its clients' FIFOs are not ours to touch
            _remove_fifo_dirs(set(listdir(FIFO_DIR)) - _fifo_dirs_before)
        remove_empty(_created)
        _created.clear()


def remove_if_unused(dirs: Iterable[Path], run_base: Path) -> None:
    """After reaping a dead run's instance, drop empty shared dirs unless another containerd
    may be using them."""
    with _lock:
        if _live_instances or SYSTEM_ADDRESS.exists():
            return
        if run_base.is_dir() and any(run_base.iterdir()):
            return
        remove_empty(dirs)


def remove_empty(dirs: Iterable[Path]) -> None:
    """rmdir each dir that is empty, deepest first."""
    for path in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        rmdir_if_empty(path)


def _remove_fifo_dirs(names: set[str]) -> None:
    """ctr leaves the FIFO directory of a detached task behind (with runc too): remove those
    our runs made, once no instance is left to use them, if they hold nothing but FIFOs."""
    for name in names:
        path = FIFO_DIR / name
        try:
            entries = list(path.iterdir())
            if all(stat.S_ISFIFO(e.lstat().st_mode) for e in entries):
                for entry in entries:
                    entry.unlink()
                path.rmdir()
        except OSError:
            continue
