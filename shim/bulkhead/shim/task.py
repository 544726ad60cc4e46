"""Host-side record of one container task (its init process) and its exit."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2

from bulkhead.stdio.host import ProcessIO

# Go's zero time.Time: what containerd expects for "not exited yet".
GO_ZERO_SECONDS = -62135596800


class Status(enum.IntEnum):
    """containerd.v1.types.Status values."""

    UNKNOWN = 0
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4


@dataclass
class Exit:
    """Exit status and time, reused by Wait, State, Delete and the events."""

    status: int
    at: timestamp_pb2.Timestamp


@dataclass
class Task:
    """One container of the sandbox, as containerd sees it."""

    id: str
    bundle: str
    stdin: str
    stdout: str
    stderr: str
    terminal: bool
    io: ProcessIO
    guest_pid: int = 0
    status: Status = Status.CREATED
    exit: Exit | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    waiter: asyncio.Task[None] | None = None
    # Held across Start's RPC and its event, so an immediate exit cannot be published first.
    start_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timings: dict[str, float] = field(default_factory=dict)

    def exited_at(self) -> timestamp_pb2.Timestamp:
        """The exit time, or Go's zero time while running."""
        if self.exit is not None:
            return self.exit.at
        return timestamp_pb2.Timestamp(seconds=GO_ZERO_SECONDS)
