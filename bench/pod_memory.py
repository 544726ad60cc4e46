"""Host memory of an idle pod, as PSS (proportional set size: shared pages split among their
users, so summing over pods does not count the shared Python/QEMU/libc pages N times).

Bulkhead: the pod's shim daemon (`python -m bulkhead.shim.daemon ... -id <sandbox id>`) plus
its VM's QEMU (`qemu-system-x86_64 ... -name guest=bulkhead-<sandbox id>`); any other process
below the shim would be counted with the shim. runc: the pod's containerd-shim-runc-v2 plus
everything below it (the pause process and the container's sh/sleep).
"""

from __future__ import annotations

from dataclasses import dataclass

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo import procs
from bulkhead.monitor import procfs
from footprint import children_map, pss_kib, with_descendants
from harness.containerd import PrivateContainerd

SHIM_DAEMON = "bulkhead.shim.daemon"
RUNC_SHIM = "containerd-shim-runc-v2"
QEMU_PREFIX = "qemu-system"


@dataclass
class PodMemory:
    """PSS in KiB of one pod's processes, by part, and how many processes each part had."""

    parts: dict[str, int]
    counts: dict[str, int]
    pids: frozenset[int] = frozenset()  # every process counted, for CPU sampling

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def shims_of(instance: PrivateContainerd, sandbox_id: str) -> list[procs.Proc]:
    """The long-running shim(s) of this instance serving the sandbox (not `start`/`delete`)."""
    address = str(instance.address)
    return procs.find_processes(
        lambda p: procs.has_arg_pair(p, "-address", address)
        and procs.has_arg_pair(p, "-id", sandbox_id)
        and p.argv[-1] not in ("start", "delete"))


def is_vm_of(proc: procs.Proc, sandbox_id: str) -> bool:
    """A QEMU whose `-name` is guest=bulkhead-<sandbox id>[,...]."""
    if not proc.exe_name.startswith(QEMU_PREFIX):
        return False
    wanted = f"guest=bulkhead-{sandbox_id}"
    argv = proc.argv
    return any(arg == "-name" and i + 1 < len(argv) and argv[i + 1].split(",")[0] == wanted
               for i, arg in enumerate(argv))


def bulkhead_pod(instance: PrivateContainerd, sandbox_id: str,
                 children: dict[int, list[int]]) -> PodMemory:
    """Shim daemon (+ any helpers below it) and QEMU of one Bulkhead pod."""
    daemons = [p.pid for p in shims_of(instance, sandbox_id) if SHIM_DAEMON in p.argv]
    qemus = {p.pid for p in procs.find_processes(lambda p: is_vm_of(p, sandbox_id))}
    if not daemons or not qemus:
        raise RuntimeError(f"pod {sandbox_id[:12]}: shim daemon {daemons}, QEMU {sorted(qemus)}")
    shim: set[int] = set(daemons)
    for pid in daemons:
        shim |= (with_descendants(pid, children) - {pid})
    shim -= qemus
    return PodMemory({"shim": sum(map(pss_kib, shim)), "QEMU": sum(map(pss_kib, qemus))},
                     {"shim": len(shim), "QEMU": len(qemus)}, frozenset(shim | qemus))


def runc_pod(instance: PrivateContainerd, sandbox_id: str,
             children: dict[int, list[int]]) -> PodMemory:
    """containerd-shim-runc-v2 of one runc pod, and the pause + container processes below it."""
    shims = [p.pid for p in shims_of(instance, sandbox_id) if p.exe_name == RUNC_SHIM]
    if not shims:
        raise RuntimeError(f"pod {sandbox_id[:12]}: no {RUNC_SHIM} found")
    below: set[int] = set()
    for pid in shims:
        below |= (with_descendants(pid, children) - {pid})
    below -= set(shims)
    return PodMemory({"shim": sum(map(pss_kib, shims)),
                      "pause + container": sum(map(pss_kib, below))},
                     {"shim": len(shims), "pause + container": len(below)},
                     frozenset(set(shims) | below))


def cpu_seconds(pids: frozenset[int]) -> float:
    """utime + stime of these processes so far (those that exited count 0)."""
    total = 0.0
    for pid in pids:
        try:
            total += procfs.stat(pid).cpu_seconds
        except procfs.ProcError:
            pass
    return total


def measure_pods(instance: PrivateContainerd, handler: str,
                 sandbox_ids: list[str]) -> list[PodMemory]:
    """Every pod's PSS parts, read in one pass (one process-tree snapshot)."""
    children = children_map()
    measure = bulkhead_pod if handler == "bulkhead" else runc_pod
    return [measure(instance, sid, children) for sid in sandbox_ids]
