"""Which sandboxes exist on this host: the state directories under /run/bulkhead/<ns>/<id>/.

A sandbox is live while the shim its state.json names still runs (checked against its command
line, so a reused pid does not count); a directory whose shim is gone is stale: `delete` should
have removed it, and `bulkhead ps` shows it flagged. The templates directory is not a sandbox.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bulkhead import paths
from bulkhead.sandbox.state import SandboxState
from bulkhead.vmm.base import is_our_qemu, read_pid_file

SHIM_MODULE = b"bulkhead.shim.daemon"  # in every resident shim's argv (see shim/start.py)
# Where template.store keeps VM templates under the run dir (a unit test checks it agrees);
# not imported from there: it loads asyncio, and `bulkhead ps` should start fast.
TEMPLATES = "templates"


@dataclass(frozen=True)
class SandboxDir:
    """One state directory and what its files say about the sandbox."""

    namespace: str
    sandbox_id: str
    path: str
    state: SandboxState | None  # None: no readable state.json
    shim_alive: bool
    vm_pid: int  # the sandbox's QEMU, 0 when none of ours runs

    @property
    def stale(self) -> bool:
        """Left behind by a shim that is gone."""
        return not self.shim_alive


def shim_running(pid: int, sandbox_id: str) -> bool:
    """True if pid is the resident shim of sandbox_id (not merely a process with that pid)."""
    if pid <= 1:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return SHIM_MODULE in argv and sandbox_id.encode() in argv


def _subdirs(path: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def inspect(namespace: str, sandbox_id: str, path: str) -> SandboxDir:
    """Read one state directory."""
    state = SandboxState.load(path)
    alive = state is not None and shim_running(state.shim_pid, sandbox_id)
    vm_pid = read_pid_file(Path(path)) or 0
    if vm_pid and not is_our_qemu(vm_pid, Path(path)):
        vm_pid = 0
    return SandboxDir(namespace, sandbox_id, path, state, alive, vm_pid)


def discover(run_dir: str | None = None) -> list[SandboxDir]:
    """Every sandbox state directory, live and stale, sorted by namespace and id."""
    root = run_dir or paths.RUN_DIR
    found = []
    for namespace in _subdirs(root):
        if namespace == TEMPLATES:
            continue
        ns_dir = os.path.join(root, namespace)
        for sandbox_id in _subdirs(ns_dir):
            found.append(inspect(namespace, sandbox_id, os.path.join(ns_dir, sandbox_id)))
    return found


def live(run_dir: str | None = None) -> list[SandboxDir]:
    """The sandboxes whose shim runs."""
    return [d for d in discover(run_dir) if d.shim_alive]
