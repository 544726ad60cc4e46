"""Host-side records of containerd's tasks: a container, its init and exec processes, exits."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from bulkhead_wire.ttrpc import Code, TtrpcError
from google.protobuf import timestamp_pb2

from bulkhead.sandbox.oci_hooks import ContainerHooks
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

    @classmethod
    def now(cls, status: int) -> Exit:
        """An exit stamped with the current time (for exits the guest could not report)."""
        at = timestamp_pb2.Timestamp()
        at.GetCurrentTime()
        return cls(status, at)


@dataclass
class Process:
    """The init (exec_id "") or an exec process of a container, as containerd sees it."""

    container_id: str
    exec_id: str
    stdin: str
    stdout: str
    stderr: str
    terminal: bool
    io: ProcessIO
    status: Status = Status.CREATED
    exit: Exit | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    waiter: asyncio.Task[None] | None = None
    # Held across Start's RPC and its event, so an immediate exit cannot be published first.
    start_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """What containerd calls this process in events and State: exec id, or container id."""
        return self.exec_id or self.container_id

    @property
    def name(self) -> str:
        """How messages call it."""
        if self.exec_id:
            return f"exec {self.exec_id} of container {self.container_id}"
        return f"container {self.container_id}"

    def exited_at(self) -> timestamp_pb2.Timestamp:
        """The exit time, or Go's zero time while running."""
        if self.exit is not None:
            return self.exit.at
        return timestamp_pb2.Timestamp(seconds=GO_ZERO_SECONDS)

    def set_exit(self, exit_: Exit) -> None:
        """Record the exit once; later calls keep the first (Wait results never change)."""
        if self.exit is None:
            self.exit = exit_
        self.status = Status.STOPPED
        self.exited.set()


@dataclass
class Container:
    """One container of the sandbox: its bundle, init, execs and what was published for it."""

    id: str
    bundle: str
    init: Process
    execs: dict[str, Process] = field(default_factory=dict)
    paused: bool = False
    guest_pid: int = 0  # its init's pid in the guest (a pod's containers join the sandbox's)
    oom_reported: int = 0  # the guest cgroup's oom_kill count already published as /tasks/oom
    oom_published_at: float = 0.0  # monotonic time of the last /tasks/oom (they are rate-bound)
    hooks: ContainerHooks | None = None  # the spec's host-side OCI hooks

    @property
    def status(self) -> Status:
        """The init's status, PAUSED while frozen."""
        if self.paused and self.init.status == Status.RUNNING:
            return Status.PAUSED
        return self.init.status

    def process(self, exec_id: str) -> Process:
        """The init ("") or a known exec; NotFound names the missing one."""
        if not exec_id:
            return self.init
        proc = self.execs.get(exec_id)
        if proc is None:
            raise TtrpcError(Code.NOT_FOUND,
                             f"process {exec_id} does not exist in container {self.id}: not found")
        return proc

    def processes(self) -> list[Process]:
        """The init and every exec."""
        return [self.init, *self.execs.values()]
