"""What the whole suite may not change on the host: the paths, mounts, network devices, network
namespaces, iptables rules and processes a test's containerd, CNI, shim or installer could
create. Taken when the session starts and compared when it ends (after every fixture's
teardown), so a test that leaves anything behind, or removes what it did not make, fails the run
whatever state the machine was in before."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# A path and how deep below it entries count (0: only whether it exists).
WATCHED_PATHS: tuple[tuple[str, int], ...] = (
    ("/etc/cni", 3), ("/opt/cni", 3), ("/var/lib/cni", 3),
    ("/etc/containerd", 2), ("/var/lib/containerd", 1), ("/opt/containerd", 1),
    ("/run/containerd", 2), ("/var/run/nri", 1), ("/opt/nri", 1),
    ("/etc/bulkhead", 2), ("/var/lib/bulkhead", 2), ("/var/cache/bulkhead", 1),
    ("/run/bulkhead", 2), ("/opt/bulkhead", 1), ("/usr/local/share/bulkhead", 1),
    ("/usr/local/bin", 1), ("/etc/systemd/system", 1), ("/run/netns", 1), ("/run", 1),
    ("/var/log/pods", 1), ("/var/log/containers", 1), ("/sys/fs/cgroup", 2),
    ("/var/lib/bulkhead-test", 1), ("/run/bulkhead-test", 1),
    ("/var/lib/bulkhead-demo", 1),  # bulkhead.demo's instances (the doctor's smoke test too)
)
# Not the suite's to undo: util-linux's own state dir (libmount's utab), which any mount(8) makes
# on first use, as it is on every systemd host from boot.
NOT_OURS = frozenset({"/run/mount"})
ENTRY_CAP = 2000  # per watched path: a runaway directory is reported, not walked
OUR_PROCESSES = ("qemu-system", "containerd", "bulkhead", "runsc", "crun", "passt")


@dataclass(frozen=True)
class HostState:
    """One reading: a sorted set of lines per aspect of the host."""

    aspects: dict[str, frozenset[str]]

    @classmethod
    def read(cls) -> HostState:
        return cls({"paths": _paths(), "mounts": _mounts(), "links": _links(),
                    "iptables": _iptables(), "processes": _processes()})


def changes(before: HostState, after: HostState) -> list[str]:
    """`+ aspect: line` for what appeared, `- aspect: line` for what went; empty when equal."""
    out: list[str] = []
    for aspect, was in before.aspects.items():
        now = after.aspects.get(aspect, frozenset())
        out += [f"+ {aspect}: {line}" for line in sorted(now - was)]
        out += [f"- {aspect}: {line}" for line in sorted(was - now)]
    return out


def _paths() -> frozenset[str]:
    lines: set[str] = set()
    for top, depth in WATCHED_PATHS:
        if os.path.lexists(top):
            lines.add(top)
            lines |= _entries(Path(top), depth)
    return frozenset(p for p in lines if p not in NOT_OURS and not p.startswith(
        tuple(f"{n}/" for n in NOT_OURS)))


def _entries(top: Path, depth: int) -> set[str]:
    """Paths up to depth below top, without following symlinks; capped at ENTRY_CAP."""
    found: set[str] = set()
    level = [top]
    for _ in range(depth):
        below: list[Path] = []
        for d in level:
            try:
                with os.scandir(d) as it:
                    for entry in it:
                        found.add(entry.path)
                        if entry.is_dir(follow_symlinks=False):
                            below.append(Path(entry.path))
            except OSError:
                continue
            if len(found) > ENTRY_CAP:
                return found | {f"{top}/... (over {ENTRY_CAP} entries)"}
        level = below
    return found


def _mounts() -> frozenset[str]:
    """Mount points of the host's mount namespace (the field mountinfo escapes, as it is)."""
    with open("/proc/self/mountinfo") as f:
        return frozenset(line.split()[4] for line in f if line.strip())


def _links() -> frozenset[str]:
    return frozenset(os.listdir("/sys/class/net"))


def _iptables() -> frozenset[str]:
    """Rules and chains of the tables CNI and portmap write (counters left out)."""
    binary = shutil.which("iptables")
    if binary is None:
        return frozenset()
    lines: set[str] = set()
    for table in ("filter", "nat", "mangle"):
        res = subprocess.run([binary, "-w", "-t", table, "-S"], capture_output=True, text=True,
                             timeout=60, check=False)
        lines |= {f"{table} {ln}" for ln in res.stdout.splitlines() if ln}
    return frozenset(lines)


def _processes() -> frozenset[str]:
    """`pid command` of every live process of a kind the suite starts."""
    found: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = os.path.basename(argv[0].decode(errors="replace")) if argv[0] else ""
        args = " ".join(a.decode(errors="replace") for a in argv[:3])
        if name.startswith(OUR_PROCESSES) or "containerd-shim" in args:
            found.add(f"{pid} {args[:200]}")
    return frozenset(found)
