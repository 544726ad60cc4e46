"""cgroup v2 helpers: enable controllers for containers, find a process's cgroup, list its pids."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ROOT = "/sys/fs/cgroup"
WANTED_CONTROLLERS = ("cpu", "memory", "pids", "io", "cpuset")


def enable_controllers(root: str = ROOT, wanted: tuple[str, ...] = WANTED_CONTROLLERS) -> list[str]:
    """Delegate the wanted controllers to child cgroups (crun's); returns those enabled.

    The root cgroup is exempt from the no-internal-processes rule, so the agent can stay in it.
    Each controller is written on its own so that one refusal does not block the others.
    """
    try:
        with open(f"{root}/cgroup.controllers") as f:
            available = f.read().split()
    except OSError as exc:
        log.warning("cgroup2 not usable at %s: %s", root, exc)
        return []
    enabled = []
    for name in wanted:
        if name not in available:
            continue
        try:
            with open(f"{root}/cgroup.subtree_control", "w") as f:
                f.write(f"+{name}")
            enabled.append(name)
        except OSError as exc:
            log.warning("cannot enable cgroup controller %s: %s", name, exc)
    return enabled


def cgroup_of(pid: int, proc: str = "/proc") -> str | None:
    """The unified-hierarchy cgroup path of pid ("/..."), or None if it is gone or not v2."""
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def container_cgroup_of(pid: int, proc: str = "/proc") -> str | None:
    """pid's cgroup when it has one of its own: never the root nor the agent's own cgroup, which
    kill_all would end (a development agent's children share the agent's)."""
    path = cgroup_of(pid, proc)
    return None if path in (None, "/", cgroup_of(os.getpid(), proc)) else path


def pids_in(path: str, root: str = ROOT) -> list[int]:
    """Every pid in the cgroup `path` and its descendants; raises OSError if it is gone."""
    base = root + path.rstrip("/")
    pids: list[int] = []
    for dirpath, _dirs, files in os.walk(base, onerror=_raise):
        if "cgroup.procs" in files:
            with open(f"{dirpath}/cgroup.procs") as f:
                pids.extend(int(word) for word in f.read().split())
    return pids


def _raise(exc: OSError) -> None:
    """os.walk error hook: a vanished cgroup must not look like an empty one."""
    raise exc


def read_flat_keyed(path: str) -> dict[str, int]:
    """A `key value` per line cgroup file (memory.events, cpu.stat, memory.stat)."""
    out: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                out[key] = int(value)
    return out


def oom_kills(path: str, root: str = ROOT) -> int:
    """memory.events oom_kill of the cgroup at `path`; 0 if it is gone or has no memory control."""
    try:
        return read_flat_keyed(f"{root}{path.rstrip('/')}/memory.events").get("oom_kill", 0)
    except OSError:
        return 0


def kill_all(path: str, root: str = ROOT) -> bool:
    """SIGKILL every process in the cgroup at once (cgroup.kill); False if it is gone."""
    try:  # (never created: a cgroup without cgroup.kill is not one to write into)
        fd = os.open(f"{root}{path.rstrip('/')}/cgroup.kill", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)
        return True
    except OSError as exc:
        log.debug("cgroup.kill of %s: %s", path, exc)
        return False
