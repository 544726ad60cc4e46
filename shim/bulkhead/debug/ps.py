"""`bulkhead ps`: one line per sandbox on this host, from its state directory and /proc.

Reads only files (state.json, metrics.json, /proc): never a shim or an agent, like the monitor.
A directory whose shim is gone is listed as stale, not hidden: it is a leak to clean up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field

from bulkhead.monitor import discovery, procfs
from bulkhead.monitor.discovery import SandboxDir
from bulkhead.monitor.snapshot import Snapshot, SnapshotError

COLUMNS = ("NAMESPACE", "SANDBOX", "VM-PID", "BOOT", "UPTIME", "MEMORY", "CONTAINERS", "STATUS")


@dataclass
class Row:
    """One sandbox as `ps` shows it (and `--json` prints it)."""

    namespace: str
    sandbox: str
    status: str  # "running", "no VM" (shim up, VM not started or stopped) or "stale"
    shim_pid: int
    vm_pid: int
    boot: str  # "template", "cold" or "" (unknown: no snapshot yet)
    template_miss: str
    uptime_seconds: float | None  # since QEMU started
    shim_pss_bytes: int | None
    vm_pss_bytes: int | None
    containers: list[str] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int | None:
        """Shim + QEMU PSS: what the sandbox costs the host."""
        parts = [n for n in (self.shim_pss_bytes, self.vm_pss_bytes) if n is not None]
        return sum(parts) if parts else None


def _pss(pid: int) -> int | None:
    if not pid:
        return None
    try:
        return procfs.pss_bytes(pid)
    except procfs.ProcError:
        return None


def _uptime(pid: int, booted_at: float, now: float) -> float | None:
    if not pid:
        return None
    try:
        return max(0.0, now - procfs.start_time(procfs.stat(pid), booted_at))
    except procfs.ProcError:
        return None


def row(sandbox: SandboxDir, booted_at: float, now: float) -> Row:
    """Gather one sandbox's line."""
    try:
        snap = Snapshot.load(sandbox.path)
    except SnapshotError:
        snap = None
    state = sandbox.state
    shim_pid = state.shim_pid if state is not None else 0
    alive = sandbox.shim_alive
    status = "stale" if not alive else "running" if sandbox.vm_pid else "no VM"
    return Row(
        namespace=sandbox.namespace, sandbox=sandbox.sandbox_id, status=status,
        shim_pid=shim_pid, vm_pid=sandbox.vm_pid,
        boot=snap.boot_mode if snap is not None else "",
        template_miss=snap.template_miss if snap is not None else "",
        uptime_seconds=_uptime(sandbox.vm_pid, booted_at, now),
        shim_pss_bytes=_pss(shim_pid) if alive else None, vm_pss_bytes=_pss(sandbox.vm_pid),
        containers=list(state.containers) if state is not None else [])


def rows(run_dir: str | None = None) -> list[Row]:
    """Every sandbox state directory on the host, live and stale."""
    booted_at, now = procfs.boot_time(), time.time()
    return [row(d, booted_at, now) for d in discovery.discover(run_dir)]


def human_duration(seconds: float | None) -> str:
    """42s, 3m05s, 2h07m, 3d04h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def human_bytes(n: int | None) -> str:
    """MiB with one decimal (a sandbox costs tens to hundreds of MiB)."""
    return "-" if n is None else f"{n / 2**20:.1f}M"


def table(found: list[Row]) -> str:
    """Aligned columns, a header first."""
    lines = [COLUMNS] + [
        (r.namespace, r.sandbox, str(r.vm_pid or "-"), r.boot or "-",
         human_duration(r.uptime_seconds), human_bytes(r.memory_bytes), str(len(r.containers)),
         r.status if r.status != "stale" else f"STALE (shim {r.shim_pid or '?'} gone)")
        for r in found]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines) + "\n"


def build_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `bulkhead ps`."""
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")


def run(args: argparse.Namespace) -> int:
    """Print the sandboxes; exit 0 even when some are stale (they are shown)."""
    found = rows()
    if args.json:
        out = [dict(asdict(r), memory_bytes=r.memory_bytes) for r in found]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(table(found))
    return 0
