"""The VMM driver interface the sandbox uses, plus crash-only cleanup of a leftover VMM.

This module must stay cheap to import and must not import asyncio: the `delete` command of the
shim binary calls kill_stale() when the shim daemon is gone, and `delete` has to be fast.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio
    import socket

# File names inside VMConfig.state_dir; the sandbox and kill_stale() rely on them.
PID_FILE = "qemu.pid"
QMP_SOCKET = "qmp.sock"
CTL_SOCKET = "ctl.sock"
DATA_SOCKET = "data.sock"
CONSOLE_LOG = "console.log"
DEBUG_SOCKET = "debug.sock"
STDERR_LOG = "qemu.stderr"
STATE_DIR_ENV = "BULKHEAD_VM_STATE_DIR"  # in QEMU's environment: whose VM it is (is_our_qemu)
RUNTIME_FILES = (QMP_SOCKET, CTL_SOCKET, DATA_SOCKET, DEBUG_SOCKET, PID_FILE)

CHANNELS = ("auto", "serial", "vsock")
ACCELS = ("auto", "kvm", "tcg")


class VMError(Exception):
    """A VM failed to start or stop; the message names the step and carries the console tail."""


class VMKilled(VMError):
    """QEMU was killed by a signal from outside (SIGKILL, SIGTERM, ...): not the guest's or a
    template's fault, and nothing a retry should paper over."""


@dataclass
class VMConfig:
    """Everything a driver needs to boot one pod VM."""

    name: str  # sandbox id, for messages
    state_dir: Path  # exists; sockets, console.log and qemu.pid live here
    kernel: Path
    initrd: Path
    rootfs: Path
    shared_dir: Path  # exported over 9p with mount_tag "bulkhead"
    memory_mib: int = 512
    vcpus: int = 1
    channel: str = "auto"  # auto | serial | vsock (auto: vsock iff /dev/vhost-vsock is usable)
    accel: str = "auto"  # auto | kvm | tcg
    qemu_binary: str = "qemu-system-x86_64"
    boot_timeout: float = 30.0
    extra_cmdline: str = ""
    debug: bool = False
    tcg_tb_mib: int = 0  # TCG translation buffer (MiB); 0 leaves QEMU's default
    # Guest RAM in a file: a template's memory (shared=True while the template is made, so its
    # pages land in the file; False for a clone, which maps it copy-on-write).
    memory_file: Path | None = None
    memory_shared: bool = False
    restore_from: Path | None = None  # a template's device state: resume it instead of booting
    # The pod network's backend: an open tap in the pod's netns (QEMU finds its vnet header
    # itself); -1: none, the guest NIC then leads nowhere (lone containers, templates).
    tap_fd: int = -1
    # A lone container's VM: QEMU runs in a network namespace of its own, where it makes the
    # tap OWN_NETNS_TAP itself; whatever configures /proc/<VM pid>/ns/net after Create (ctr
    # --cni, nerdctl) is joined to it at Start (sandbox/pod_network.py).
    own_netns: bool = False
    # `bulkhead shell`: QEMU listens on DEBUG_SOCKET for the guest's debug port (else a null
    # backend: the port exists in every VM, so one template serves both).
    debug_shell: bool = False
    allow_unfiltered: bool = False  # boot without -sandbox when this QEMU cannot install it


OWN_NETNS_TAP = "bulkhead0"  # the tap's name in a lone container VM's own network namespace


@dataclass
class AgentLink:
    """The two agent channels, each with its handshake already consumed. The data channel
    is a bare socket: the sandbox hands it to a stdio link (C engine or Python pumps)."""

    ctl: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    data: socket.socket


class VirtualMachine(Protocol):
    """One VM as the sandbox sees it, whatever the VMM (QemuVM; fakes in the unit tests)."""

    pid: int
    accel: str  # what was actually chosen: "kvm" or "tcg"
    channel: str  # "serial" or "vsock"
    timings: dict[str, float]  # time.monotonic() stamps: "qemu_started", "agent_connected"

    @property
    def restored(self) -> bool:
        """Cloned from a template (its boot happened there, long ago)."""
        ...

    async def start(self) -> AgentLink: ...

    async def stop(self, timeout: float = 3.0) -> None: ...

    async def wait(self) -> int: ...

    def console_tail(self, lines: int = 20) -> str: ...


def read_pid_file(state_dir: Path) -> int | None:
    """The pid recorded in state_dir/qemu.pid, or None when absent or unreadable."""
    try:
        text = (state_dir / PID_FILE).read_text().strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def is_our_qemu(pid: int, state_dir: Path) -> bool:
    """True only if pid runs a QEMU whose arguments mention state_dir (guards against pid reuse)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not argv or not os.path.basename(argv[0]).startswith("qemu-system-"):
        return False
    needles = {str(state_dir), str(state_dir.resolve())}
    try:  # spawn() names the state dir in QEMU's environment; older VMs only in their argv
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        env = []
    if any(f"{STATE_DIR_ENV}={n}".encode() in env for n in needles):
        return True
    return any(n in arg.replace(",,", ",") for arg in argv[1:] for n in needles)


def pid_gone(pid: int) -> bool:
    """True once pid no longer exists or is a zombie (a zombie holds no VM resources)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat.rpartition(")")[2].split()
    return not fields or fields[0] in ("Z", "X")


def remove_runtime_files(state_dir: Path) -> None:
    """Delete the sockets and pid record of a dead VM (console.log stays for the sandbox)."""
    for name in RUNTIME_FILES:
        try:
            (state_dir / name).unlink()
        except FileNotFoundError:
            pass


def kill_stale(state_dir: Path | str, wait: float = 2.0) -> bool:
    """SIGKILL the QEMU recorded in state_dir/qemu.pid if it is still ours; True if one was killed.

    For `delete` when the shim daemon is gone. Never signals a process whose cmdline is not a QEMU
    mentioning state_dir. Waits at most `wait` seconds for it to die, else raises VMError.
    """
    state_dir = Path(state_dir)
    pid = read_pid_file(state_dir)
    if pid is None or pid <= 1:
        return False
    if not is_our_qemu(pid, state_dir):
        remove_runtime_files(state_dir)  # the recorded QEMU is gone; its pid may have been reused
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        remove_runtime_files(state_dir)
        return False
    deadline = time.monotonic() + wait
    while not pid_gone(pid):
        if time.monotonic() >= deadline:
            raise VMError(f"kill_stale: QEMU pid {pid} of {state_dir} survived SIGKILL "
                          f"for {wait} s")
        time.sleep(0.005)
    remove_runtime_files(state_dir)
    return True
