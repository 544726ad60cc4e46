"""Host-side figures of a process, read from /proc: PSS, CPU seconds, start time.

The monitor reads these itself (no shim involved): they cost a few syscalls per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")


class ProcError(Exception):
    """A process's /proc file could not be read or parsed; the message names it."""


def parse_pss_kib(smaps_rollup: str) -> int:
    """The `Pss:` line of smaps_rollup, in KiB."""
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise ValueError("no Pss line")


@dataclass(frozen=True)
class StatFields:
    """What the monitor takes from /proc/PID/stat."""

    cpu_seconds: float  # utime + stime
    start_ticks: int  # clock ticks after boot


def parse_stat(stat: str) -> StatFields:
    """/proc/PID/stat; the command name may hold spaces and parentheses, so split after the
    last ')'. Fields after it start at field 3 (state)."""
    rest = stat.rpartition(")")[2].split()
    if len(rest) < 20:
        raise ValueError(f"{len(rest) + 2} fields")
    utime, stime, start = int(rest[11]), int(rest[12]), int(rest[19])  # fields 14, 15, 22
    return StatFields((utime + stime) / TICKS, start)


def parse_boot_time(proc_stat: str) -> float:
    """`btime` of /proc/stat: the host's boot as a Unix time."""
    for line in proc_stat.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime line")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise ProcError(f"{path}: {exc.strerror or exc}") from None


def pss_bytes(pid: int) -> int:
    """Proportional set size: the process's own pages plus its share of shared ones."""
    path = f"/proc/{pid}/smaps_rollup"
    try:
        return parse_pss_kib(_read(path)) * 1024
    except (ValueError, IndexError) as exc:
        raise ProcError(f"{path}: {exc}") from None


def stat(pid: int) -> StatFields:
    """CPU seconds and start of a process."""
    path = f"/proc/{pid}/stat"
    try:
        return parse_stat(_read(path))
    except ValueError as exc:
        raise ProcError(f"{path}: {exc}") from None


def boot_time() -> float:
    """When the host booted (Unix time), to turn start ticks into a wall-clock time."""
    try:
        return parse_boot_time(_read("/proc/stat"))
    except ValueError as exc:
        raise ProcError(f"/proc/stat: {exc}") from None


def start_time(fields: StatFields, booted_at: float) -> float:
    """A process's start as a Unix time."""
    return booted_at + fields.start_ticks / TICKS
