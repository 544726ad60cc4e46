"""Latency and failures of the shim's agent calls, counted where they are made (in the shim).

Kept as plain numbers (no prometheus_client in the shim): the snapshot carries them to the
monitor, which exposes them as a histogram per method.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bulkhead_wire.ttrpc import Client, TtrpcError
from google.protobuf.message import Message

# Upper bounds (seconds) of the latency buckets: agent calls take ~1 ms to seconds under TCG.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONNECTION = "connection"  # the error "code" of a call whose link to the agent broke

M = TypeVar("M", bound=Message)


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


class TimedClient:
    """A ttrpc Client whose every call is timed and counted; cancelled calls are not counted
    (they were given up by the caller, not failed by the agent)."""

    def __init__(self, client: Client, stats: RpcStats) -> None:
        self._client = client
        self.stats = stats

    async def call(self, service: str, method: str, request: Message, response_type: type[M],
                   timeout: float | None = None) -> M:
        """Client.call, counted."""
        start = time.monotonic()
        try:
            reply = await self._client.call(service, method, request, response_type, timeout)
        except TtrpcError as exc:
            self.stats.observe(method, time.monotonic() - start, exc.code.name.lower())
            raise
        except ConnectionError:
            self.stats.observe(method, time.monotonic() - start, CONNECTION)
            raise
        self.stats.observe(method, time.monotonic() - start)
        return reply
