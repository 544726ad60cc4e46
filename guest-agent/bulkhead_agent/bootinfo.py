"""Guest boot phase timings for Check: the init's marks plus the agent's own."""

from __future__ import annotations

import time
from dataclasses import dataclass

BOOT_TIMES = "/run/bulkhead/boot-times"


def uptime() -> float:
    """Seconds since the kernel started (the clock /proc/uptime shows, at full resolution)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def parse_boot_times(text: str) -> dict[str, float]:
    """Parse `name seconds` lines as the init writes them; malformed lines are skipped."""
    marks: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            marks[parts[0]] = float(parts[1])
        except ValueError:
            continue
    return marks


def read_boot_times(path: str = BOOT_TIMES) -> dict[str, float]:
    """The init's marks, or none if it left no file (development runs on the host)."""
    try:
        with open(path) as f:
            return parse_boot_times(f.read())
    except OSError:
        return {}


@dataclass(frozen=True, slots=True)
class BootInfo:
    """What Check reports about the boot, fixed once the agent has started."""

    init_start: float
    switch_root: float
    agent_start: float

    @classmethod
    def collect(cls, agent_start: float, path: str = BOOT_TIMES) -> BootInfo:
        """Read the init's marks and pair them with the agent's start uptime."""
        marks = read_boot_times(path)
        return cls(marks.get("init_start", 0.0), marks.get("switch_root", 0.0), agent_start)
