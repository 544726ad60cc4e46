"""metrics.json: what a shim knows about its sandbox, written into its state directory.

The shim rewrites it every few seconds (write to a temporary file, then rename), so the
monitor reads a whole snapshot or the previous one and never has to call a shim or an agent.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from bulkhead.agent.rpc_stats import BUCKETS, MethodStats
from bulkhead.private_files import write_private

METRICS_FILE = "metrics.json"
FORMAT = 1  # bumped when a field changes meaning; the monitor skips other formats


class SnapshotError(Exception):
    """A metrics.json that cannot be used; the message names the file."""


@dataclass
class GuestFigures:
    """The guest's own view of itself (the agent's GuestStats), at fetched_at."""

    memory_total_bytes: int = 0
    memory_free_bytes: int = 0
    memory_available_bytes: int = 0
    memory_cached_bytes: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # by mode, all vCPUs
    vcpus: int = 0
    uptime_seconds: float = 0.0
    processes: int = 0
    fetched_at: float = 0.0  # wall clock (time.time()) of the reading


@dataclass
class Snapshot:
    """One sandbox as its shim sees it."""

    sandbox_id: str
    namespace: str
    shim_pid: int
    vm_pid: int
    boot_mode: str  # "template" (cloned) or "cold"
    template_miss: str  # why a cold boot; "" for a clone
    phases: dict[str, float]  # seconds from the start of the VM's start to each phase
    containers: list[str]
    written_at: float = 0.0  # wall clock
    guest: GuestFigures | None = None  # None until the first reading arrived
    guest_fetch_errors: int = 0  # readings that failed or timed out
    rpc: dict[str, MethodStats] = field(default_factory=dict)  # agent calls by method
    rpc_buckets: list[float] = field(default_factory=lambda: list(BUCKETS))
    format: int = FORMAT

    def save(self, state_dir: str) -> None:
        """Atomic: a reader sees this snapshot whole or the one before."""
        write_private(os.path.join(state_dir, METRICS_FILE),
                      json.dumps(asdict(self), separators=(",", ":")).encode())

    @classmethod
    def load(cls, state_dir: str) -> Snapshot | None:
        """The sandbox's snapshot; None if there is none yet; SnapshotError if unusable."""
        path = os.path.join(state_dir, METRICS_FILE)
        try:
            with open(path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SnapshotError(f"{path}: {exc}") from None
        try:
            return cls.from_dict(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"{path}: malformed snapshot: {exc!r}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Snapshot:
        """Inverse of asdict, checking the format and the latency buckets."""
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
        if [float(b) for b in raw["rpc_buckets"]] != list(BUCKETS):
            raise ValueError("written with other latency buckets")
        guest = raw.get("guest")
        return cls(
            sandbox_id=str(raw["sandbox_id"]), namespace=str(raw["namespace"]),
            shim_pid=int(raw["shim_pid"]), vm_pid=int(raw["vm_pid"]),
            boot_mode=str(raw["boot_mode"]), template_miss=str(raw["template_miss"]),
            phases={str(k): float(v) for k, v in raw["phases"].items()},
            containers=[str(c) for c in raw["containers"]],
            written_at=float(raw["written_at"]),
            guest=GuestFigures(**guest) if guest is not None else None,
            guest_fetch_errors=int(raw["guest_fetch_errors"]),
            rpc={str(m): MethodStats.from_dict(s) for m, s in raw["rpc"].items()})


def remove(state_dir: str) -> None:
    """Drop the snapshot (the VM is gone; the shim may live on a moment)."""
    for name in (METRICS_FILE, METRICS_FILE + ".tmp"):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass
