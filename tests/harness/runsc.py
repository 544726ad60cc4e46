"""gVisor's runsc as a peer runtime of the suite's private containerds (the benchmarks compare
Bulkhead with it). packaging/host/install-deps unpacks Debian bookworm-backports' runsc (a static
Go binary, no containerd-shim-runsc-v1) into $BULKHEAD_OPT/runsc; containerd's own runc shim
(io.containerd.runc.v2) drives it as its runc binary. The shim's runtime options have no field
for a runtime's global flags, so BinaryName is a wrapper script, written into the instance's own
run dir (nothing system-wide), that adds them:

  --platform=systrap  seccomp-trap syscall interception: no /dev/kvm needed (this host's is a
                      PVM hypervisor) and no ptrace; gVisor's default since 2023, named so an
                      older or newer default cannot change what is measured.
  --network=none      for lone `ctr run` containers only: ctr gives them no network namespace
                      (they share the host's), and runsc refuses "network enabled in root
                      network namespace". CRI pods (the `gvisor` handler) get the pod's netns
                      from CNI and keep runsc's default (sandbox) network.

Nothing else is needed on this host (containerd 1.7, cgroup v1 hybrid, root without
CAP_SYS_RESOURCE): runsc's cgroup v1 code and its defaults work as they are. Its defaults, which
matter when reading file I/O figures: the rootfs gets an overlay whose upper layer lives in the
sandbox's memory (--overlay2=root:self: writes never reach the snapshot on the host), and /tmp is
a tmpfs of the sandbox unless the image ships files there."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from bulkhead.demo import procs

OPT_DIR = Path(os.environ.get("BULKHEAD_OPT", "/opt/bulkhead"))
RUNSC = OPT_DIR / "runsc" / "usr" / "bin" / "runsc"
RUNC_SHIM = "io.containerd.runc.v2"
GLOBAL_FLAGS = ("--platform=systrap",)
CTR_FLAGS = (*GLOBAL_FLAGS, "--network=none")


def missing() -> str | None:
    """Why runsc cannot run here, or None."""
    if not os.access(RUNSC, os.X_OK):
        return f"runsc not installed at {RUNSC} (packaging/host/install-deps installs it)"
    return None


def wrapper_text(flags: tuple[str, ...]) -> str:
    args = " ".join(flags)
    return (f"#!/bin/sh\n# runsc with its global flags for containerd's runc shim "
            f"(tests/harness/runsc.py)\nexec {RUNSC} {args} \"$@\"\n")


def write_wrapper(path: Path, flags: tuple[str, ...]) -> Path:
    """The script containerd's runc shim runs as its runc binary (0700, root's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(wrapper_text(flags))
    tmp.chmod(stat.S_IRWXU)
    tmp.replace(path)
    return path


def stray_processes(marker: str) -> list[procs.Proc]:
    """runsc's sandbox and gofer processes whose command line names marker (an instance's run
    dir: the runc shim passes --root and --log under it). A runsc whose start failed leaves
    them running after the shim deleted the task."""
    return procs.find_processes(
        lambda p: p.exe_name.startswith("runsc") and any(marker in arg for arg in p.argv))


def _cgroup_dirs(pid: int) -> list[Path]:
    """The cgroup v1 (and unified) dirs a process is in, below the hierarchies' roots."""
    dirs: list[Path] = []
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if path in ("", "/"):
            continue
        name = controllers.removeprefix("name=").split(",")[0] or "unified"
        dirs.append(Path("/sys/fs/cgroup") / name / path.lstrip("/"))
    return dirs


def kill_strays(marker: str) -> list[str]:
    """Kill stray_processes(marker) and remove the (then empty) cgroups runsc made for them."""
    strays = stray_processes(marker)
    if not strays:
        return []
    cgroups = {d for p in strays for d in _cgroup_dirs(p.pid)}
    survivors = procs.kill_and_wait(p.pid for p in strays)
    for d in sorted(cgroups, key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    return [f"runsc processes did not exit: {survivors}"] if survivors else []
