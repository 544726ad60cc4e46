#!/usr/bin/env python3
"""Host memory (PSS) per idle container: Bulkhead (shim + QEMU) vs runc (shim + container).

Starts N `sleep 3600` containers per runtime, measures their processes' PSS, breaks QEMU's PSS
down by mapping kind, then checks each still answers an exec. Prints figures only; asserts
nothing. Usage (as root, after `make install`):
    /opt/bulkhead/venv/bin/python bench/footprint.py [-n 10] [--settle 5] [--containerd-version 1.7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo import procs
from bulkhead.demo.container import DEMO_IMAGE
from bulkhead.demo.errors import ContainerdError
from harness.containerd import PrivateContainerd
from runtime_comparison import (
    RUNTIMES,
    Runtime,
    add_runtimes_option,
    bench_containerd,
    new_container_id,
    ratio,
    remove_container,
    selected,
)

SHIM_DAEMON = "bulkhead.shim.daemon"
PARTS = {"runc": ("shim", "container processes"), "gvisor": ("shim", "runsc sandbox"),
         "bulkhead": ("shim", "QEMU"), "bulkhead-cold": ("shim", "QEMU"),
         "bulkhead-shared": ("shim", "QEMU")}
KINDS = ("guest RAM", "TCG translation buffer", "other anonymous", "kernel image file",
         "initrd file", "QEMU binary and libraries")
PAGE_KIB = 4


@dataclass
class Mapping:
    """One /proc/<pid>/smaps entry: what backs it and how much of it counts."""

    path: str
    flags: set[str]
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        """No file behind it: malloc arenas, mmap'd buffers, [heap], [stack], [anon:...]."""
        return not self.path or self.path.startswith(("[heap", "[stack", "[anon"))

    def kib(self, name: str) -> int:
        return self.fields.get(name, 0)


@dataclass
class QemuMemory:
    """QEMU's PSS (KiB) by mapping kind, plus what the attribution could not settle."""

    kinds: dict[str, int]
    huge: dict[str, int]  # of which in transparent huge pages (AnonHugePages)
    ram_backing: str
    notes: list[str]


@dataclass
class RuntimeResult:
    """Everything measured for one runtime's N containers."""

    parts: list[dict[str, int]]  # per container: part -> PSS KiB
    qemu: list[QemuMemory]
    exec_times: list[float]
    answered: int


# --- process memory -------------------------------------------------------------------------


def pss_kib(pid: int) -> int:
    """A process's proportional set size: shared pages count split among their users."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0  # gone meanwhile: it no longer costs anything
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def with_descendants(pid: int, children: dict[int, list[int]]) -> set[int]:
    """pid and everything below it in the process tree."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo += children.get(current, [])
    return found


# --- containers -----------------------------------------------------------------------------


def task_table(ctd: PrivateContainerd) -> dict[str, tuple[int, str]]:
    """`ctr task ls` as container id -> (pid, status)."""
    table = {}
    for line in ctd.lines("tasks", "ls")[1:]:
        cid, pid, status = line.split()[:3]
        table[cid] = (int(pid), status)
    return table


def start_idle(ctd: PrivateContainerd, runtime: Runtime, cids: list[str], n: int) -> None:
    """Start n sleeping containers one after another (ids appended first, for cleanup)."""
    for _ in range(n):
        cid = new_container_id()
        cids.append(cid)
        ctd.ctr("run", *runtime.run_args(ctd), "-d", DEMO_IMAGE, cid, "sleep", "3600",
                timeout=120)


def wait_running(ctd: PrivateContainerd, cids: list[str], timeout: float = 60.0) -> None:
    """Block until every task reports RUNNING, so no container is measured mid-start."""
    deadline = time.monotonic() + timeout
    while True:
        table = task_table(ctd)
        pending = [c for c in cids if table.get(c, (0, ""))[1] != "RUNNING"]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ContainerdError(f"not RUNNING after {timeout} s: {pending}")
        time.sleep(0.5)


def shim_pids(ctd: PrivateContainerd, runtime: Runtime, cid: str) -> list[int]:
    """The long-lived shim(s) serving cid: `-address <ours> -id <cid>`, not a start/delete call."""
    def serves(p: procs.Proc) -> bool:
        if not (procs.has_arg_pair(p, "-address", str(ctd.address))
                and procs.has_arg_pair(p, "-id", cid)):
            return False
        if runtime.is_bulkhead:
            return SHIM_DAEMON in p.argv
        return p.argv[-1] not in ("start", "delete")
    return [p.pid for p in procs.find_processes(serves)]


def container_pids(ctd: PrivateContainerd, cid: str) -> list[int]:
    """The container's processes as runc reports them (`ctr task ps`)."""
    rows = ctd.lines("tasks", "ps", cid)[1:]
    return [int(row.split()[0]) for row in rows if row.split()[0].isdigit()]


def measure_runc(ctd: PrivateContainerd, cid: str) -> dict[str, int]:
    """runc: the shim process(es), and the container's own processes."""
    shims = shim_pids(ctd, RUNTIMES["runc"], cid)
    return {"shim": sum(map(pss_kib, shims)),
            "container processes": sum(map(pss_kib, container_pids(ctd, cid)))}


def measure_gvisor(ctd: PrivateContainerd, cid: str, children: dict[int, list[int]]
                   ) -> dict[str, int]:
    """gVisor: the runc shim, and runsc's sandbox and gofer (named by the container's bundle or
    id) with their children (the sandbox's systrap stubs)."""
    def runsc_of(p: procs.Proc) -> bool:
        return p.exe_name.startswith("runsc") and any(
            a == cid or a.endswith(f"/{cid}") for a in p.argv)
    sandbox: set[int] = set()
    for proc in procs.find_processes(runsc_of):
        sandbox |= with_descendants(proc.pid, children)
    return {"shim": sum(map(pss_kib, shim_pids(ctd, RUNTIMES["runc"], cid))),
            "runsc sandbox": sum(map(pss_kib, sandbox))}


def measure_bulkhead(ctd: PrivateContainerd, cid: str, qemu_pid: int,
                     children: dict[int, list[int]]) -> dict[str, int]:
    """Bulkhead: the shim daemon (with any helpers it spawned) and the VM's QEMU."""
    qemu = with_descendants(qemu_pid, children)
    shim: set[int] = set()
    for pid in shim_pids(ctd, RUNTIMES["bulkhead"], cid):
        shim |= with_descendants(pid, children) - qemu
    return {"shim": sum(map(pss_kib, shim)), "QEMU": sum(map(pss_kib, qemu))}


# --- QEMU breakdown -------------------------------------------------------------------------


def read_smaps(pid: int) -> list[Mapping]:
    """Parse /proc/<pid>/smaps into mappings with their kB fields and VmFlags."""
    mappings: list[Mapping] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            parts = line.split(maxsplit=5)
            mappings.append(Mapping(parts[5] if len(parts) > 5 else "", set()))
        elif head == "VmFlags:":
            mappings[-1].flags = set(rest.split())
        elif rest.strip().endswith(" kB"):
            mappings[-1].fields[head.rstrip(":")] = int(rest.split()[0])
    return mappings


def arg_after(argv: tuple[str, ...], flag: str) -> str:
    """The value following flag in argv, or ''."""
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[i + 1]
    return ""


def memory_kib(spec: str) -> int:
    """QEMU's -m value (`512M`, `1G`, `size=512M,...`, bare MiB) in KiB; 0 if unreadable."""
    value = spec.split(",")[0].removeprefix("size=").strip().upper()
    units = {"K": 1, "M": 1024, "G": 1024 * 1024}
    try:
        if value and value[-1] in units:
            return int(float(value[:-1]) * units[value[-1]])
        return int(float(value) * 1024) if value else 0
    except ValueError:
        return 0


def file_kib(path: str) -> int:
    """A file's size in KiB rounded up to pages (the size an anonymous copy of it would map)."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return 0
    return -(-size // (PAGE_KIB * 1024)) * PAGE_KIB


def is_guest_ram(m: Mapping, ram_kib: int) -> bool:
    """The guest RAM: a mapping of the -m size (QEMU may add up to 2 MiB of alignment)."""
    return ram_kib > 0 and ram_kib <= m.kib("Size") <= ram_kib + 2048


def is_private_copy(m: Mapping, sizes: dict[str, int]) -> str:
    """The file an anonymous mapping copies if its size matches one (kernel or initrd), else ''."""
    for name, kib in sizes.items():
        if kib and m.anonymous and kib <= m.kib("Size") <= kib + 2 * PAGE_KIB:
            return name
    return ""


def classify(m: Mapping, ram_kib: int, files: dict[str, str], copies: dict[str, int]) -> str:
    """Which KINDS entry (or private-copy label) a mapping's PSS belongs to."""
    if is_guest_ram(m, ram_kib):
        return "guest RAM"
    for name, path in files.items():
        if path and m.path == path:
            return name
    if not m.anonymous:
        return "QEMU binary and libraries"
    copy = is_private_copy(m, copies)
    if copy:
        return f"{copy} (private anonymous copy)"
    if "ex" in m.flags and m.kib("Size") >= 16 * 1024:
        return "TCG translation buffer"
    return "other anonymous"


def qemu_memory(pid: int) -> QemuMemory:
    """QEMU's PSS split by mapping kind, with the guest RAM's backing named."""
    proc = procs.read_proc(pid)
    argv = proc.argv if proc else ()
    ram_kib = memory_kib(arg_after(argv, "-m"))
    files = {"kernel image file": arg_after(argv, "-kernel"),
             "initrd file": arg_after(argv, "-initrd")}
    copies = {name.removesuffix(" file"): file_kib(path) for name, path in files.items()}
    kinds, huge = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
    backing, notes = "not found", []
    for m in read_smaps(pid):
        kind = classify(m, ram_kib, files, copies)
        kinds[kind] = kinds.get(kind, 0) + m.kib("Pss")
        huge[kind] = huge.get(kind, 0) + m.kib("AnonHugePages")
        if kind == "guest RAM":
            backing = f"{m.path or 'anonymous'}, {m.kib('Size') // 1024} MiB mapped"
        elif kind in files and m.kib("Anonymous"):
            notes.append(f"{kind}: {m.kib('Anonymous')} KiB copied-on-write")
    return QemuMemory(kinds, huge, backing, notes)


# --- responsiveness -------------------------------------------------------------------------


def exec_probe(ctd: PrivateContainerd, cid: str) -> float | None:
    """Seconds an attached `ctr task exec <cid> true` took, or None if it failed."""
    start = time.monotonic()
    try:
        res = ctd.ctr("tasks", "exec", "--exec-id", "probe", cid, "true", check=False,
                      timeout=60)
    except ContainerdError:
        return None
    return time.monotonic() - start if res.returncode == 0 else None


# --- one runtime ----------------------------------------------------------------------------


def checked_qemu_pid(pid: int) -> int:
    """The Bulkhead task pid is its VM's QEMU; anything else would make the split meaningless."""
    proc = procs.read_proc(pid)
    if proc is None or not proc.exe_name.startswith("qemu-system"):
        raise ContainerdError(f"task pid {pid} is not a QEMU process: {proc}")
    return pid


def measure_all(ctd: PrivateContainerd, runtime: Runtime, cids: list[str]) -> RuntimeResult:
    """Per-container PSS parts (and QEMU breakdowns), then one exec probe per container."""
    table, children = task_table(ctd), children_map()
    parts, qemu = [], []
    for cid in cids:
        if runtime.is_bulkhead:
            qemu_pid = checked_qemu_pid(table[cid][0])
            parts.append(measure_bulkhead(ctd, cid, qemu_pid, children))
            qemu.append(qemu_memory(qemu_pid))
        elif runtime.gvisor:
            parts.append(measure_gvisor(ctd, cid, children))
        else:
            parts.append(measure_runc(ctd, cid))
    probes = [exec_probe(ctd, cid) for cid in cids]
    times = [t for t in probes if t is not None]
    return RuntimeResult(parts, qemu, times, len(times))


def run_runtime(ctd: PrivateContainerd, runtime: Runtime, n: int, settle: float
                ) -> RuntimeResult:
    """Start n idle containers, let them settle, measure, and remove them whatever happens."""
    cids: list[str] = []
    try:
        start_idle(ctd, runtime, cids, n)
        wait_running(ctd, cids)
        time.sleep(settle)
        return measure_all(ctd, runtime, cids)
    finally:
        for cid in cids:
            remove_container(ctd, cid)


# --- printing -------------------------------------------------------------------------------


def mib(kib: float) -> str:
    return f"{kib / 1024:7.1f} MiB"


def mean_of(rows: list[dict[str, int]], key: str) -> float:
    return statistics.fmean(row.get(key, 0) for row in rows) if rows else 0.0


def print_parts(name: str, result: RuntimeResult) -> float:
    """One line of mean PSS parts per container; returns the mean total."""
    means = {part: mean_of(result.parts, part) for part in PARTS[name]}
    total = sum(means.values())
    split = "  + ".join(f"{part} {mib(kib)}" for part, kib in means.items())
    print(f"  {name:9s} {split}  = {mib(total)} per container")
    return total


def print_qemu(qemu: list[QemuMemory]) -> None:
    """QEMU's PSS by mapping kind, averaged over the VMs, and what could not be attributed."""
    if not qemu:
        return
    kinds = list(dict.fromkeys(k for q in qemu for k in q.kinds))
    means = {k: statistics.fmean(q.kinds.get(k, 0) for q in qemu) for k in kinds}
    huge = {k: statistics.fmean(q.huge.get(k, 0) for q in qemu) for k in kinds}
    print(f"QEMU PSS by mapping kind, mean over {len(qemu)} VMs:")
    for kind in kinds:
        extra = [f"{huge[kind] / 1024:.1f} MiB of it in THP"] if huge[kind] else []
        extra += [qemu[0].ram_backing] if kind == "guest RAM" else []
        print(f"  {kind:42s} {mib(means[kind])}" + (f"  ({'; '.join(extra)})" if extra else ""))
    print(f"  {'sum':42s} {mib(sum(means.values()))}")
    if not any(k.endswith("(private anonymous copy)") for k in kinds):
        print("  no anonymous mapping of the kernel's or initrd's size: QEMU holds no private "
              "copy of them that could be attributed (the files are mapped, shared page cache)")
    for note in sorted({n for q in qemu for n in q.notes}):
        print(f"  note: {note}")


def print_exec(name: str, result: RuntimeResult, n: int) -> None:
    median = f"{statistics.median(result.exec_times):.3f} s" if result.exec_times else "n/a"
    print(f"  {name:9s} {result.answered}/{n} answered `ctr task exec <id> true`, "
          f"median {median}")


def report(results: dict[str, RuntimeResult], n: int, settle: float, version: str) -> None:
    """Print the whole comparison."""
    print(f"host memory per idle container (PSS, `sleep 3600`), containerd {version}, n={n} "
          f"each, measured {settle:g} s after all were RUNNING")
    totals = {name: print_parts(name, result) for name, result in results.items()}
    print(f"  ratios: {ratio(totals)}")
    print_qemu(results.get("bulkhead", RuntimeResult([], [], [], 0)).qemu)
    print("responsiveness after measuring:")
    for name, result in results.items():
        print_exec(name, result, n)


def run(n: int, settle: float, version: str, runtimes: dict[str, Runtime]
        ) -> dict[str, RuntimeResult]:
    """The runtimes in one private containerd, one after the other."""
    with bench_containerd(version) as ctd:
        return {name: run_runtime(ctd, rt, n, settle) for name, rt in runtimes.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="idle containers per runtime")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds to wait after all are RUNNING before measuring")
    parser.add_argument("--containerd-version", default="1.7")
    add_runtimes_option(parser, "runc,bulkhead")
    args = parser.parse_args()
    results = run(args.n, args.settle, args.containerd_version, selected(args.runtimes))
    report(results, args.n, args.settle, args.containerd_version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
