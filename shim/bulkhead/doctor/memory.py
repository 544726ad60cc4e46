"""Memory check: is there room for N more pods? A pod costs the host its guest RAM (at worst
all of memory_mib, once the guest touched it) plus the shim and QEMU around it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bulkhead.doctor.context import Context
from bulkhead.doctor.report import Finding, failure, ok, warning

MEMINFO = Path("/proc/meminfo")
# Measured by bench/pods.py (docs/pods.md): an idle pod's shim + QEMU PSS is ~122 MiB under
# TCG; packaging/kubernetes/runtimeclass.yaml declares 160 MiB of overhead per pod.
IDLE_POD_MIB = 122
POD_OVERHEAD_MIB = 160


def mem_available_mib(meminfo: Path = MEMINFO) -> int:
    """MemAvailable in MiB (the kernel's estimate of what new work can use without swap)."""
    for line in meminfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            return int(value.split()[0]) // 1024
    raise OSError(f"{meminfo} has no MemAvailable line")


@dataclass(frozen=True)
class PodBudget:
    """What `pods` more pods of `memory_mib` guest RAM need, at idle and at worst."""

    pods: int
    memory_mib: int

    @property
    def worst_each(self) -> int:
        return self.memory_mib + POD_OVERHEAD_MIB

    @property
    def worst(self) -> int:
        return self.pods * self.worst_each

    @property
    def idle(self) -> int:
        return self.pods * IDLE_POD_MIB

    def largest_memory_mib(self, available: int) -> int:
        """The memory_mib at which `pods` pods fit at worst in `available` MiB."""
        return available // max(self.pods, 1) - POD_OVERHEAD_MIB


def judge(available: int, budget: PodBudget, source: str) -> Finding:
    """ok if N pods fit at worst, a warning if only at idle, a failure if not even one does."""
    need = (f"{budget.pods} more pods need up to {budget.worst} MiB ({budget.memory_mib} MiB "
            f"guest RAM + {POD_OVERHEAD_MIB} MiB overhead each), ~{budget.idle} MiB idle "
            f"(~{IDLE_POD_MIB} MiB each, measured)")
    have = f"MemAvailable {available} MiB"
    if available >= budget.worst:
        return ok("memory", f"{have}; {need}")
    if available < IDLE_POD_MIB:
        return failure("memory", f"{have}: not even one idle pod (~{IDLE_POD_MIB} MiB) fits",
                       "free memory on this host (stop other workloads)")
    fit = available // budget.worst_each
    target = budget.largest_memory_mib(available)
    fix = (f"memory_mib = {target}   in {source}, or plan for {fit} busy pods"
           if target >= 64 else f"plan for {fit} busy pods, or add memory")
    return warning("memory", f"{have}: only {fit} busy pods fit; {need}", fix)


def check_memory(ctx: Context) -> Iterator[Finding]:
    budget = PodBudget(ctx.options.pods, ctx.config.memory_mib)
    yield judge(mem_available_mib(), budget, ctx.setting_source("memory_mib"))
