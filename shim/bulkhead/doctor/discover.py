"""Every containerd on this host: the running daemons (from /proc: binary, --config, the gRPC
address from the flags or the config) plus the system config and binary, and files the
operator names; each with what is needed to check it."""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bulkhead.demo import procs
from bulkhead.demo.binaries import SYSTEM_PATH
from bulkhead.demo.shared_dirs import SYSTEM_ADDRESS

SYSTEM_CONFIG = Path("/etc/containerd/config.toml")  # containerd's compiled-in default
CONFIG_FLAGS = ("--config", "-config", "-c")
ADDRESS_FLAGS = ("--address", "-address", "-a")


@dataclass(frozen=True)
class Containerd:
    """One containerd to check: a running daemon (pid set) or a config file."""

    label: str
    binary: str  # "" if none was found
    config: Path
    address: Path
    pid: int | None = None
    explicit: bool = False  # named on the command line
    root: Path = Path("/")  # where its paths resolve: /proc/PID/root in another mount ns

    @property
    def running(self) -> bool:
        return self.pid is not None

    def here(self, path: Path) -> Path:
        """One of its paths as this process reaches it."""
        return path if self.root == Path("/") else self.root / path.relative_to("/")

    @property
    def executable(self) -> str:
        """What to run for its version: the very binary a daemon runs, else the path."""
        return f"/proc/{self.pid}/exe" if self.pid is not None else self.binary


def flag_value(argv: Sequence[str], names: Sequence[str]) -> str | None:
    """The value of a Go/urfave flag given as `-f v`, `--flag v` or `--flag=v` (last wins)."""
    value = None
    for i, arg in enumerate(argv):
        name, eq, inline = arg.partition("=")
        if name in names:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                value = argv[i + 1]
    return value


def is_daemon(argv: Sequence[str]) -> bool:
    """containerd itself, not `containerd config dump` or a shim: no positional argument."""
    if not argv or os.path.basename(argv[0]) != "containerd":
        return False
    flags_with_value = set(CONFIG_FLAGS + ADDRESS_FLAGS) | {"--log-level", "-l", "--root",
                                                             "--state"}
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in flags_with_value
        else:
            return False
    return True


def configured_address(config: Path) -> Path | None:
    """grpc.address from a config file, if it sets one."""
    try:
        doc = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    address = doc.get("grpc", {}).get("address")
    return Path(address) if isinstance(address, str) and address else None


def _resolve(pid: int, path: str) -> Path:
    """A path from a process's argv, made absolute against its working directory."""
    if os.path.isabs(path):
        return Path(path)
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) / path
    except OSError:
        return Path(path)


def _root(pid: int) -> Path:
    """/proc/PID/root if the process sees another filesystem (mount namespace or chroot)."""
    try:
        same_ns = os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
        same_root = os.readlink(f"/proc/{pid}/root") == "/"
    except OSError:
        return Path("/")
    return Path("/") if same_ns and same_root else Path(f"/proc/{pid}/root")


def _binary(pid: int, argv0: str) -> str:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return argv0
    return exe.removesuffix(" (deleted)")


def running() -> list[Containerd]:
    """The containerd daemons in /proc, oldest pid first."""
    found = []
    for proc in sorted(procs.processes(), key=lambda p: p.pid):
        if not is_daemon(proc.argv):
            continue
        root = _root(proc.pid)
        config_flag = flag_value(proc.argv, CONFIG_FLAGS)
        config = _resolve(proc.pid, config_flag) if config_flag else SYSTEM_CONFIG
        address_flag = flag_value(proc.argv, ADDRESS_FLAGS)
        seen = Containerd("", "", config, SYSTEM_ADDRESS, root=root)
        address = (_resolve(proc.pid, address_flag) if address_flag
                   else configured_address(seen.here(config)) or SYSTEM_ADDRESS)
        found.append(Containerd(f"containerd pid {proc.pid}", _binary(proc.pid, proc.argv[0]),
                                config, address, proc.pid, root=root))
    return found


def system_binary() -> str:
    return shutil.which("containerd", path=SYSTEM_PATH) or ""


def all_containerds(extra_configs: Sequence[Path] = ()) -> list[Containerd]:
    """Running daemons, then the system config unless a daemon reads it, then extra files."""
    found = running()
    read = {c.config.resolve() for c in found if c.root == Path("/")}
    binary = system_binary()
    if SYSTEM_CONFIG.resolve() not in read:
        found.append(Containerd("containerd (system)", binary, SYSTEM_CONFIG,
                                configured_address(SYSTEM_CONFIG) or SYSTEM_ADDRESS))
    for i, path in enumerate(extra_configs, 1):
        found.append(Containerd(f"containerd file #{i}", binary, path,
                                configured_address(path) or SYSTEM_ADDRESS, explicit=True))
    return found
