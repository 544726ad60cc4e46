"""A container's cgroup v2 figures as io.containerd.cgroups.v2.Metrics (`ctr task metrics`, CRI)."""

from __future__ import annotations

import contextlib

from bulkhead_wire.proto import cgroups_v2_pb2

from bulkhead_agent.cgroup import ROOT, read_flat_keyed

MAX = 2**64 - 1  # "max" (no limit) is reported as the largest value, as containerd does


def _read_value(path: str) -> int | None:
    """A single-number cgroup file; "max" is MAX; None if the file is missing."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return MAX
    return int(text) if text.isdigit() else None


def _memory(base: str) -> cgroups_v2_pb2.MemoryStat:
    """memory.stat by key, plus usage, limit, peak and swap."""
    mem = cgroups_v2_pb2.MemoryStat()
    with contextlib.suppress(OSError):
        for key, value in read_flat_keyed(f"{base}/memory.stat").items():
            if key in cgroups_v2_pb2.MemoryStat.DESCRIPTOR.fields_by_name:
                setattr(mem, key, value)
    for field, name in (("usage", "memory.current"), ("usage_limit", "memory.max"),
                        ("max_usage", "memory.peak"), ("swap_usage", "memory.swap.current"),
                        ("swap_limit", "memory.swap.max")):
        found = _read_value(f"{base}/{name}")
        if found is not None:
            setattr(mem, field, found)
    return mem


def _io(base: str) -> cgroups_v2_pb2.IOStat:
    """io.stat lines: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=..`."""
    stat = cgroups_v2_pb2.IOStat()
    try:
        with open(f"{base}/io.stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return stat
    for line in lines:
        dev, *pairs = line.split()
        major, _, minor = dev.partition(":")
        entry = stat.usage.add(major=int(major), minor=int(minor))
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key in ("rbytes", "wbytes", "rios", "wios") and value.isdigit():
                setattr(entry, key, int(value))
    return stat


def metrics(path: str, root: str = ROOT) -> cgroups_v2_pb2.Metrics:
    """Everything containerd shows for a cgroup v2 task; raises OSError if the cgroup is gone."""
    base = root + path.rstrip("/")
    cpu = read_flat_keyed(f"{base}/cpu.stat")  # always present in cgroup v2: proves it exists
    out = cgroups_v2_pb2.Metrics()
    for key, value in cpu.items():
        if key in cgroups_v2_pb2.CPUStat.DESCRIPTOR.fields_by_name:
            setattr(out.cpu, key, value)
    out.pids.current = _read_value(f"{base}/pids.current") or 0
    out.pids.limit = _read_value(f"{base}/pids.max") or 0
    out.memory.CopyFrom(_memory(base))
    out.io.CopyFrom(_io(base))
    with contextlib.suppress(OSError):
        for key, value in read_flat_keyed(f"{base}/memory.events").items():
            if key in cgroups_v2_pb2.MemoryEvents.DESCRIPTOR.fields_by_name:
                setattr(out.memory_events, key, value)
    return out
