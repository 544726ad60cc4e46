"""The pod's cgroup on the host: QEMU runs in it, where runc would run the pause process.

containerd's CRI reads PodSandboxStats from the host cgroup at the pod's cgroup parent, and a
kubelet accounts the pod there; a VM pod's host usage is its QEMU. No limits are written: the
guest enforces the pod's limits, and a host limit would OOM-kill the whole VM at once.
"""

from __future__ import annotations

import errno
import os
import time

CGROUP_ROOT = "/sys/fs/cgroup"
# cgroup v1 hierarchies the CRI's stats read; cpuset is left out (a new cpuset cgroup has no
# CPUs until someone copies them in, and joining it would fail).
V1_CONTROLLERS = ("cpu,cpuacct", "memory", "pids", "blkio")
RMDIR_GRACE = 2.0  # a reaped QEMU leaves its cgroup a moment later


class HostCgroupError(Exception):
    """The pod's host cgroup could not be created or joined."""


def relative_path(cgroups_path: str) -> str:
    """The cgroupfs path of an OCI cgroupsPath: "/a/b" (cgroupfs driver) or
    "slice:prefix:name" (systemd driver, a scope in an expanded slice)."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in cgroups_path):
        raise HostCgroupError(f"cgroupsPath {cgroups_path!r} has control characters")
    if ":" not in cgroups_path:
        path = os.path.normpath("/" + cgroups_path.lstrip("/"))  # ".." cannot climb past /
    else:
        parts = cgroups_path.split(":")
        if len(parts) != 3 or not parts[2]:
            raise HostCgroupError(f"cgroupsPath {cgroups_path!r}: want slice:prefix:name")
        slice_, prefix, name = parts
        for kind, value in (("prefix", prefix), ("name", name)):
            if "/" in value or value in (".", ".."):
                raise HostCgroupError(f"cgroupsPath {cgroups_path!r}: the scope's {kind} "
                                      f"{value!r} must be a plain name")
        scope = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
        path = os.path.join(expand_slice(slice_ or "system.slice"), scope)
    if path == "/":
        raise HostCgroupError(f"cgroupsPath {cgroups_path!r} names no cgroup of its own")
    return path


def expand_slice(slice_: str) -> str:
    """systemd's nesting: "a-b-c.slice" lives at /a.slice/a-b.slice/a-b-c.slice."""
    if slice_ == "-.slice":
        return "/"
    if not slice_.endswith(".slice") or "/" in slice_:
        raise HostCgroupError(f"systemd slice {slice_!r} is not a *.slice name")
    words = slice_[: -len(".slice")].split("-")
    if not all(words):
        raise HostCgroupError(f"systemd slice {slice_!r} has an empty component")
    return "/" + "/".join("-".join(words[:i]) + ".slice" for i in range(1, len(words) + 1))


def hierarchies(root: str = CGROUP_ROOT) -> list[str]:
    """Where cgroups are made: the unified root (v2), else each v1 controller's mount."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return [root]
    return [os.path.join(root, c) for c in V1_CONTROLLERS
            if os.path.isdir(os.path.join(root, c))]


def cgroup_dirs(cgroups_path: str, root: str = CGROUP_ROOT) -> list[str]:
    """The directories of one cgroup in every hierarchy (recorded before they exist)."""
    rel = relative_path(cgroups_path).lstrip("/")
    return [os.path.join(h, rel) for h in hierarchies(root)]


def join(dirs: list[str], pid: int) -> None:
    """Create each directory (parents too, as runc does) and move pid into it."""
    for path in dirs:
        try:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError as exc:
            raise HostCgroupError(f"host cgroup {path}: {exc.strerror}") from None


def remove(dirs: list[str]) -> list[str]:
    """Remove the pod's own directories (never the parents: they belong to the kubelet);
    returns those still in use by a process that is not ours to kill."""
    busy = []
    for path in dirs:
        deadline = time.monotonic() + RMDIR_GRACE
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    busy.append(path)
                    break
                time.sleep(0.02)
    return busy
