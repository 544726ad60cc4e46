"""The process table: find processes by their argv (the shims of a containerd, the containerd
daemons of a host) and end them by pid."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    """A process as seen in /proc at one moment."""

    pid: int
    argv: tuple[str, ...]
    exe_name: str

    @property
    def command(self) -> str:
        return " ".join(self.argv) or f"[{self.exe_name}]"


def read_proc(pid: int) -> Proc | None:
    base = Path("/proc") / str(pid)
    try:
        raw = (base / "cmdline").read_bytes()
        comm = (base / "comm").read_text().strip()
    except OSError:
        return None
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    name = os.path.basename(argv[0]) if argv else comm
    return Proc(pid, argv, name)


def processes() -> list[Proc]:
    """All live processes except zombies' empty entries and ourselves."""
    me = os.getpid()
    out: list[Proc] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            proc = read_proc(int(entry))
            if proc is not None and proc.argv:
                out.append(proc)
    return out


def find_processes(match: Callable[[Proc], bool]) -> list[Proc]:
    return [p for p in processes() if match(p)]


def has_arg_pair(proc: Proc, flag: str, value: str) -> bool:
    """True if argv contains `flag value` or `flag=value` (Go flag style, one or two dashes)."""
    names = {flag, "-" + flag.lstrip("-"), "--" + flag.lstrip("-")}
    argv = proc.argv
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv) and argv[i + 1] == value:
            return True
        if any(arg == f"{n}={value}" for n in names):
            return True
    return False


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_and_wait(
    pids: Iterable[int], sig: int = signal.SIGKILL, timeout: float = 5.0
) -> list[int]:
    """Signal each pid and wait for it to disappear; returns the pids still alive."""
    pending = list(pids)
    for pid in pending:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if pid_alive(p)]
        if pending:
            time.sleep(0.05)
    return pending

