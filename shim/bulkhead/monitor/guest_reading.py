"""The guest's GuestStats reply turned into figures the host can trust to be well-formed.

The agent is untrusted: a reply may carry any map keys, NaN, infinities or negative numbers.
Only the CPU modes of /proc/stat are kept, and every number is finite and in range, so
metrics.json and the Prometheus labels stay small and valid whatever the guest sends.
"""

from __future__ import annotations

import math
import time

from bulkhead_wire.proto import agent_pb2

from bulkhead.monitor.snapshot import GuestFigures

CPU_MODES = frozenset({"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"})
MAX_COUNT = 1 << 32  # vCPUs and processes: more than any guest of ours can have


def _seconds(value: float) -> float:
    """A finite, non-negative number of seconds (anything else reads as 0)."""
    return value if math.isfinite(value) and value >= 0 else 0.0


def guest_figures(reply: agent_pb2.GuestStatsResponse) -> GuestFigures:
    """Sanitised figures of one reading: unknown CPU modes dropped, numbers bounded."""
    return GuestFigures(
        memory_total_bytes=reply.memory_total_bytes,
        memory_free_bytes=reply.memory_free_bytes,
        memory_available_bytes=reply.memory_available_bytes,
        memory_cached_bytes=reply.memory_cached_bytes,
        cpu_seconds={mode: _seconds(v) for mode, v in reply.cpu_seconds.items()
                     if mode in CPU_MODES},
        vcpus=min(reply.vcpus, MAX_COUNT), uptime_seconds=_seconds(reply.uptime_seconds),
        processes=min(reply.processes, MAX_COUNT), fetched_at=time.time())
