"""Latency and failures of the shim's agent calls, as plain numbers (no prometheus_client in the
shim): the snapshot carries them to the monitor, which exposes a histogram per method.
Counted by timed_client.TimedClient; free of RPC imports so that readers load fast."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# Upper bounds (seconds) of the latency buckets: agent calls take ~1 ms to seconds under TCG.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class MethodStats:
    """One method's calls: count, total seconds, per-bucket counts (not cumulative), errors."""

    count: int = 0
    sum_seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count

    def observe(self, seconds: float, error: str) -> None:
        """Count one finished call (a failed one too: its latency is real)."""
        self.count += 1
        self.sum_seconds += seconds
        at = bisect.bisect_left(BUCKETS, seconds)
        if at < len(BUCKETS):
            self.buckets[at] += 1
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1

    def cumulative(self) -> list[int]:
        """Counts of calls at or under each bound, as Prometheus histograms want them."""
        out, total = [], 0
        for n in self.buckets:
            total += n
            out.append(total)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MethodStats:
        """Inverse of dataclasses.asdict; a bucket list of another length is refused."""
        stats = cls(int(raw["count"]), float(raw["sum_seconds"]),
                    [int(n) for n in raw["buckets"]],
                    {str(k): int(v) for k, v in raw["errors"].items()})
        if len(stats.buckets) != len(BUCKETS):
            raise ValueError(f"{len(stats.buckets)} latency buckets, expected {len(BUCKETS)}")
        return stats


class RpcStats:
    """Per-method statistics of one agent link."""

    def __init__(self) -> None:
        self.methods: dict[str, MethodStats] = {}

    def observe(self, method: str, seconds: float, error: str = "") -> None:
        """Count one call of method."""
        stats = self.methods.get(method)
        if stats is None:
            stats = self.methods[method] = MethodStats()
        stats.observe(seconds, error)
