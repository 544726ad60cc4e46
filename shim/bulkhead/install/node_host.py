"""What the node installer does to the node beyond its files: ask its containerd for a version,
restart containerd, build or drop VM templates, and see whether Bulkhead shims run. Host
commands enter PID 1's namespaces (the DaemonSet has hostPID) only when the host root is
PID 1's root, so a scratch root is never mistaken for the node."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from bulkhead.install import containerd_config as cc
from bulkhead.install import node_k8s
from bulkhead.install.ledger import HostRoot, InstallError

CONTAINERD_PATHS = ("/usr/bin/containerd", "/usr/local/bin/containerd", "/usr/sbin/containerd")
NSENTER_HOST = ("nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--")
SHIM_MARKERS = ("containerd-shim-bulkhead-v2", "bulkhead.shim.daemon")


def is_pid1_root(host: HostRoot) -> bool:
    """Whether host root is the filesystem PID 1 runs in (the real node, not a scratch tree)."""
    try:
        mine, pid1 = os.stat(host.root), os.stat("/proc/1/root")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (pid1.st_dev, pid1.st_ino)


def pid1_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip()
    except OSError:
        return "unknown"


def containerd_version(host: HostRoot) -> str:
    """The version of the node's containerd binary (run here, else chrooted into the root)."""
    found = [p for p in CONTAINERD_PATHS if host.resolve(p).is_file()]
    if not found:
        raise InstallError(f"no containerd binary under {host.root} ({', '.join(CONTAINERD_PATHS)})"
                           ": install containerd on the node, or pass --containerd-version X.Y")
    errors: list[str] = []
    for argv_prefix in ((str(host.resolve(found[0])),), ("chroot", str(host.root), found[0])):
        try:
            return _version_of(argv_prefix)
        except cc.ContainerdConfigError as exc:
            errors.append(str(exc))
    raise InstallError(f"cannot run the node's {found[0]} ({'; '.join(errors)}): "
                       "pass --containerd-version X.Y")


def _version_of(argv_prefix: tuple[str, ...]) -> str:
    if len(argv_prefix) == 1:
        return cc.detect_containerd_version(argv_prefix[0])
    res = subprocess.run([*argv_prefix, "--version"], capture_output=True, text=True,
                         timeout=20, check=False)
    parts = res.stdout.split()
    if res.returncode != 0 or len(parts) < 3:
        raise cc.ContainerdConfigError(f"`{' '.join(argv_prefix)} --version` exited "
                                       f"{res.returncode}: {res.stderr.strip()[:200]!r}")
    return parts[2].lstrip("v")


def restart_containerd(host: HostRoot, command: str | None) -> str:
    """Restart the node's containerd: the operator's command, else systemd's; else say so."""
    if command:
        argv = shlex.split(command)
    elif pid1_name() == "systemd" and is_pid1_root(host):
        argv = [*NSENTER_HOST, "systemctl", "restart", "containerd"]
    else:
        return (f"WARNING: containerd NOT restarted: PID 1 is {pid1_name()!r}, not systemd on "
                f"{host.root}, and no --restart-command was given; restart containerd on the "
                "node to load the new config")
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0:
        raise InstallError(f"restarting containerd (`{shlex.join(argv)}`) exited "
                           f"{res.returncode}: {(res.stderr or res.stdout).strip()[-500:]}")
    return f"restarted containerd: `{shlex.join(argv)}`"


def build_template(host: HostRoot) -> str:
    """Build the default VM template now with the node's own QEMU and the installed image."""
    if not is_pid1_root(host):
        return (f"templates: not built now ({host.root} is not PID 1's root); the node builds "
                "them at boot (bulkhead-templates.service, where systemd runs) or at its first "
                "Bulkhead pod")
    argv = [*NSENTER_HOST, "/usr/local/bin/bulkhead", "template", "build"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if res.returncode != 0:
        return (f"WARNING: template build failed ({(res.stderr or res.stdout).strip()[-300:]}); "
                "the first Bulkhead pod builds it (run `bulkhead doctor` on the node)")
    return f"templates: {res.stdout.strip()}"


def remove_templates(host: HostRoot) -> str:
    """Drop the node's templates (tmpfs) before the runtime that built them goes."""
    if not is_pid1_root(host):
        return f"templates: left alone ({host.root} is not PID 1's root; they go at reboot)"
    argv = [*NSENTER_HOST, "/usr/local/bin/bulkhead", "template", "rm", "--all"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return "templates: removed" if res.returncode == 0 else (
        f"templates: not removed ({(res.stderr or res.stdout).strip()[-200:]})")


def live_shims(proc: Path = Path("/proc")) -> list[int]:
    """Pids of Bulkhead shims (launchers and daemons) this process can see."""
    pids: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv[:4]]
        if any(os.path.basename(w) == SHIM_MARKERS[0] or w == SHIM_MARKERS[1] for w in words):
            pids.append(int(entry.name))
    return sorted(pids)


def set_node_label(installed: bool) -> str:
    """Label (or unlabel) this node through the in-cluster API; outside a cluster, say so."""
    return node_k8s.set_label(installed)
