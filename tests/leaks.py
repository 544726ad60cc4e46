"""Leak checks shared by the integration tests: after a test, nothing it started may survive
(VMs, shims, shim sockets, mounts, Bulkhead state dirs per namespace, taps)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bulkhead import paths
from bulkhead.demo import procs
from bulkhead.demo.ctr import CtrClient
from bulkhead.demo.shared_dirs import SHIM_SOCKET_DIR
from bulkhead.sandbox.mounts import mount_points_under
from bulkhead.template.store import BUILD_PREFIX, templates_dir
from harness.containerd import PrivateContainerd

BULKHEAD_RUN_DIR = Path(paths.RUN_DIR)
TEMPLATES_DIR = templates_dir()
TEMPLATES = TEMPLATES_DIR.name  # an entry of BULKHEAD_RUN_DIR, not a sandbox namespace
BULKHEAD_SHIM = "containerd-shim-bulkhead-v2"
HOST_NET = Path("/sys/class/net")


def _listdir(path: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(path))
    except OSError:
        return frozenset()


def sandbox_dirs() -> frozenset[str]:
    """<namespace>/<sandbox id> of every Bulkhead sandbox state dir under BULKHEAD_RUN_DIR."""
    return frozenset(f"{ns}/{name}" for ns in _listdir(BULKHEAD_RUN_DIR) - {TEMPLATES}
                     if (BULKHEAD_RUN_DIR / ns).is_dir()
                     for name in _listdir(BULKHEAD_RUN_DIR / ns))


def host_taps() -> frozenset[str]:
    """Tap (and tun) devices in the host's network namespace: a pod's tap belongs in the pod's
    netns and dies with it, so one here is a shim's leftover."""
    return frozenset(name for name in _listdir(HOST_NET)
                     if (HOST_NET / name / "tun_flags").exists())


def is_qemu(proc: procs.Proc) -> bool:
    """A VM of ours: QEMU whose state (sockets, console) lives under BULKHEAD_RUN_DIR."""
    return proc.exe_name.startswith("qemu-system") and f"{BULKHEAD_RUN_DIR}/" in proc.command


def is_bulkhead_shim(proc: procs.Proc) -> bool:
    """The shim runs as `python <venv>/bin/containerd-shim-bulkhead-v2 ...` or directly."""
    return (any(os.path.basename(a) == BULKHEAD_SHIM for a in proc.argv[:2])
            or "bulkhead.shim.daemon" in proc.argv[:3])


@dataclass(frozen=True)
class LeakBaseline:
    """What existed before a test, so only what the test created counts as a leak."""

    pids: frozenset[int] = field(default_factory=frozenset)
    shim_sockets: frozenset[str] = field(default_factory=frozenset)
    bulkhead_run: frozenset[str] = field(default_factory=frozenset)
    sandbox_dirs: frozenset[str] = field(default_factory=frozenset)
    taps: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def capture(cls) -> LeakBaseline:
        return cls(
            pids=frozenset(p.pid for p in procs.processes()),
            shim_sockets=_listdir(SHIM_SOCKET_DIR),
            bulkhead_run=_listdir(BULKHEAD_RUN_DIR),
            sandbox_dirs=sandbox_dirs(),
            taps=host_taps(),
        )


def find_leaks(instance: CtrClient, baseline: LeakBaseline | None = None) -> list[str]:
    """Describe every leak found now; an empty list means clean."""
    base = baseline or LeakBaseline()
    leaks: list[str] = []
    instance_addr = str(instance.address)
    for p in procs.processes():
        if p.pid in base.pids:
            continue
        if is_qemu(p) or is_bulkhead_shim(p) or procs.has_arg_pair(p, "-address", instance_addr):
            leaks.append(f"process {p.pid}: {p.command[:200]}")
    for name in sorted(_listdir(SHIM_SOCKET_DIR) - base.shim_sockets):
        leaks.append(f"shim socket {SHIM_SOCKET_DIR / name}")
    for name in sorted(_listdir(BULKHEAD_RUN_DIR) - base.bulkhead_run - {TEMPLATES}):
        leaks.append(f"bulkhead state {BULKHEAD_RUN_DIR / name}")
    # A namespace dir (k8s.io) may outlive its sandboxes; the sandboxes' own dirs may not.
    leaks += [f"bulkhead sandbox state {BULKHEAD_RUN_DIR / d}"
              for d in sorted(sandbox_dirs() - base.sandbox_dirs)
              if d.split("/")[0] in base.bulkhead_run]
    leaks += [f"tap {name} in the host netns" for name in sorted(host_taps() - base.taps)]
    # Templates stay (a cache on tmpfs, by design); half-built ones must not.
    leaks += [f"template build {TEMPLATES_DIR / name}"
              for name in sorted(_listdir(TEMPLATES_DIR))
              if name.startswith(BUILD_PREFIX)]
    watched: list[Path] = [BULKHEAD_RUN_DIR]  # templates hold no mounts either
    if isinstance(instance, PrivateContainerd):
        watched = [instance.root_dir, instance.run_dir, BULKHEAD_RUN_DIR]
        leaks += _leftover_tasks(instance)
    leaks += [f"mount {m.mount_point} ({m.fs_type})" for m in mount_points_under(*watched)]
    return leaks


def _leftover_tasks(instance: PrivateContainerd) -> list[str]:
    if not instance.running:
        return []
    tasks = instance.lines("tasks", "ls", "-q")
    return [f"task {instance.namespace}/{t} still exists" for t in tasks]


def assert_no_leaks(
    instance: CtrClient, baseline: LeakBaseline | None = None, timeout: float = 10.0
) -> None:
    """Fail unless everything is cleaned up within timeout (shims exit asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        leaks = find_leaks(instance, baseline)
        if not leaks or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert not leaks, "leaked after the test:\n  " + "\n  ".join(leaks)
