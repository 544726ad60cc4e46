"""Turns guest exits and OOM kills into stored results and containerd events, in order.

Order, as containerd's runc shim gives it (`cmd/containerd-shim-runc-v2/task/service.go`): a
process's start event before its exit; /tasks/oom before the exit the OOM kill caused; every
running exec's exit before its container's init exit. An exit is stored and published only
after all the process's output reached its host sink.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from bulkhead_wire.proto import events_pb2
from bulkhead_wire.ttrpc import TtrpcError

from bulkhead.sandbox.sandbox import Sandbox
from bulkhead.shim.events import EventSink
from bulkhead.shim.task import Container, Exit, Process

log = logging.getLogger(__name__)

KILLED = 128 + signal.SIGKILL  # what a process reports when its VM died under it
EXEC_EXITS_FIRST_TIMEOUT = 5.0  # seconds the init's exit waits for its execs' exits
# The guest decides when OOM replies come: a flood is throttled, not followed.
OOM_POLL_INTERVAL = 0.1  # seconds: at most this many WaitOOM replies a second are taken
OOM_EVENT_INTERVAL = 1.0  # seconds between two /tasks/oom of one container (more coalesce)


class ExitReporter:
    """One per shim: a waiter task per started process and one OOM long poll per VM."""

    def __init__(self, sandbox: Sandbox, events: EventSink,
                 containers: dict[str, Container]) -> None:
        self.sandbox = sandbox
        self.events = events
        self.containers = containers
        self._oom_task: asyncio.Task[None] | None = None

    def watch(self, container: Container, proc: Process) -> None:
        """Follow a started (or created init) process until its exit is published."""
        proc.waiter = asyncio.create_task(self._wait_exit(container, proc))
        if self._oom_task is None or self._oom_task.done():
            self._oom_task = asyncio.create_task(self._oom_loop())

    async def _wait_exit(self, container: Container, proc: Process) -> None:
        """Wait for the guest exit, then for every output byte to reach the host sink."""
        agent = self.sandbox.agent
        oom_kills = 0
        marks: dict[int, int] | None = None  # None: the guest is gone, wait for every EOF
        try:
            if agent is None:
                raise ConnectionError(f"sandbox {self.sandbox.id} has no agent")
            resp = await agent.wait_process(container.id, proc.exec_id)
            exit_ = Exit(resp.exit_status, resp.exited_at)
            oom_kills = resp.oom_kills
            _, out, err = proc.io.stream_ids
            marks = {out: resp.stdout_bytes, err: resp.stderr_bytes}
        except (TtrpcError, ConnectionError) as exc:
            exit_ = Exit.now(KILLED)
            reason = self.sandbox.dead or str(exc)
            log.error("%s: exit reported as %d: the guest could not report it (%s)",
                      proc.name, KILLED, reason)
        await proc.io.drain_output(marks)
        # EOF on the host FIFOs now, as runc's shim gives once the pipes drain: the CRI waits
        # for it before it deletes a task (ExecSync, the TaskExit handler), ctr after.
        await proc.io.close()
        self.publish_oom(container, oom_kills)
        if not proc.exec_id:
            await self._execs_exited(container)
        async with proc.start_lock:  # a Start in flight publishes its start event first
            proc.set_exit(exit_)
            proc.timings["exit_reported"] = time.monotonic()
            self.events.publish("/tasks/exit", events_pb2.TaskExit(
                container_id=container.id, id=proc.id, pid=self.sandbox.vm_pid,
                exit_status=proc.exit.status if proc.exit else exit_.status,
                exited_at=proc.exited_at()))
        if not proc.exec_id:
            self._log_phases(proc)

    @staticmethod
    async def _execs_exited(container: Container) -> None:
        """The init's exit comes after those of its running execs (the guest kills them)."""
        waiters = [p.waiter for p in container.execs.values()
                   if p.waiter is not None and not p.waiter.done()]
        if waiters:
            await asyncio.wait(waiters, timeout=EXEC_EXITS_FIRST_TIMEOUT)

    def publish_oom(self, container: Container, oom_kills: int) -> None:
        """/tasks/oom once per new OOM kill the guest counted in the container's cgroup."""
        if oom_kills <= container.oom_reported:
            return
        container.oom_reported = oom_kills
        now = time.monotonic()
        if container.oom_published_at and now - container.oom_published_at < OOM_EVENT_INTERVAL:
            return  # coalesced into the one just published
        container.oom_published_at = now
        log.info("container %s: OOM kill in the guest (count %d)", container.id, oom_kills)
        self.events.publish("/tasks/oom", events_pb2.TaskOOM(container_id=container.id))

    async def _oom_loop(self) -> None:
        """Long-poll the agent for OOM kills that did not end a watched process."""
        fast = 0  # replies in a row that came within OOM_POLL_INTERVAL
        while (agent := self.sandbox.agent) is not None:
            asked = time.monotonic()
            try:
                event = await agent.wait_oom()
            except (TtrpcError, ConnectionError) as exc:
                log.debug("OOM watch of sandbox %s ended: %s", self.sandbox.id, exc)
                return
            container = self.containers.get(event.container_id)
            if container is not None:
                self.publish_oom(container, event.oom_kills)
            wait = OOM_POLL_INTERVAL - (time.monotonic() - asked)
            fast = fast + 1 if wait > 0 else 0
            if wait > 0:
                if fast == 10:  # a burst of real kills is shorter: this is a flood
                    log.warning("sandbox %s: the agent answers WaitOOM faster than %.0f/s: "
                                "throttled", self.sandbox.id, 1 / OOM_POLL_INTERVAL)
                await asyncio.sleep(wait)

    def stop(self) -> None:
        """Stop the OOM poll (the sandbox is going away)."""
        if self._oom_task is not None:
            self._oom_task.cancel()

    def _log_phases(self, proc: Process) -> None:
        """One log line with the boot and container phases, relative to QEMU start."""
        phases = self.sandbox.phases()
        t0 = self.sandbox.timings.get("qemu_started")
        if t0 is not None:
            for name in ("create", "bundle_ready", "created", "started", "first_output",
                         "exit_reported"):
                if name in proc.timings:
                    phases["container_" + name] = proc.timings[name] - t0
        text = " ".join(f"{k}={v:.3f}" for k, v in sorted(phases.items(), key=lambda kv: kv[1]))
        log.info("boot phases: %s (container %s)", text, proc.container_id)
