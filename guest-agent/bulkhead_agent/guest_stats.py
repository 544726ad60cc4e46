"""The whole guest's memory and CPU time for GuestStats: what `bulkhead monitor` shows per VM.

Read from /proc rather than the root cgroup: the agent and the kernel's own use count too.
"""

from __future__ import annotations

import os

from bulkhead_wire.proto import agent_pb2

from bulkhead_agent.bootinfo import uptime

CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_meminfo(text: str) -> dict[str, int]:
    """`Name:   1234 kB` lines as {name: bytes}; lines without a number are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        scale = 1024 if parts[1:2] == ["kB"] else 1
        out[name.strip()] = int(parts[0]) * scale
    return out


def parse_cpu_seconds(text: str, ticks_per_second: int) -> dict[str, float]:
    """The first `cpu ` line of /proc/stat (all CPUs) as {mode: seconds}."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            return {mode: int(value) / ticks_per_second
                    for mode, value in zip(CPU_MODES, fields[1:], strict=False)}
    raise ValueError("no cpu line in /proc/stat")


def parse_task_count(loadavg: str) -> int:
    """The total in `0.00 0.01 0.05 1/73 1234` (runnable/total tasks)."""
    return int(loadavg.split()[3].partition("/")[2])


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def collect(proc: str = "/proc") -> agent_pb2.GuestStatsResponse:
    """One reading; OSError or ValueError if /proc is not what Linux writes."""
    mem = parse_meminfo(_read(f"{proc}/meminfo"))
    cpu = parse_cpu_seconds(_read(f"{proc}/stat"), os.sysconf("SC_CLK_TCK"))
    return agent_pb2.GuestStatsResponse(
        memory_total_bytes=mem.get("MemTotal", 0), memory_free_bytes=mem.get("MemFree", 0),
        memory_available_bytes=mem.get("MemAvailable", 0),
        memory_cached_bytes=mem.get("Cached", 0) + mem.get("Buffers", 0),
        cpu_seconds=cpu, vcpus=os.cpu_count() or 0, uptime_seconds=uptime(),
        processes=parse_task_count(_read(f"{proc}/loadavg")))
