"""The shim's side of the metrics: one asyncio task that keeps the sandbox's snapshot fresh.

It starts once the VM is up, asks the agent for the guest's figures every few seconds (a reading
that fails or times out is counted and the previous one kept) and writes metrics.json; it is
cancelled when the VM stops. No thread: the shim's single loop runs it between RPCs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Protocol

from bulkhead_wire.ttrpc import TtrpcError

from bulkhead.agent.client import AgentClient
from bulkhead.monitor import snapshot
from bulkhead.monitor.guest_reading import guest_figures
from bulkhead.monitor.snapshot import Snapshot
from bulkhead.sandbox.state import SandboxState

log = logging.getLogger(__name__)

INTERVAL = 5.0  # seconds between snapshots
FIRST_READING_DELAY = 1.0  # seconds: leave the VM's first container create alone
FETCH_TIMEOUT = 2.0  # seconds for the agent's GuestStats before the reading counts as failed
REASON_CHARS = 300  # a template miss reason is a label value: keep it bounded


class SandboxView(Protocol):
    """What the publisher reads of the Sandbox it observes (bulkhead.sandbox.sandbox)."""

    id: str
    namespace: str
    state_dir: str
    state: SandboxState

    @property
    def vm_pid(self) -> int: ...

    @property
    def restored(self) -> bool: ...

    @property
    def agent(self) -> AgentClient | None: ...

    def phases(self) -> dict[str, float]: ...


def boot_phases(phases: dict[str, float]) -> dict[str, float]:
    """Phases (relative to QEMU start, earlier steps negative) moved to start at 0: seconds
    since the shim began starting the VM."""
    if not phases:
        return {}
    first = min(phases.values())
    return {name: round(at - first, 6) for name, at in phases.items()}


class SnapshotPublisher:
    """A Sandbox's observer (the shim daemon hands it over): told when its VM is up and when
    it goes, it keeps that VM's metrics.json fresh in between."""

    def __init__(self) -> None:
        self.sandbox: SandboxView | None = None
        self._task: asyncio.Task[None] | None = None
        self._snapshot: Snapshot | None = None
        self._cold_reason = ""

    def cold_boot(self, reason: str) -> None:
        """Why the VM about to start boots cold instead of cloning a template."""
        self._cold_reason = reason[:REASON_CHARS]

    def vm_started(self, sandbox: SandboxView) -> None:
        """Write the first snapshot now and keep it fresh (idempotent)."""
        self.sandbox = sb = sandbox
        agent = sb.agent
        if self._task is not None or agent is None:
            return
        self._snapshot = Snapshot(
            sandbox_id=sb.id, namespace=sb.namespace, shim_pid=os.getpid(), vm_pid=sb.vm_pid,
            boot_mode="template" if sb.restored else "cold",
            template_miss="" if sb.restored else self._cold_reason,
            phases=boot_phases(sb.phases()), containers=[], rpc=agent.rpc_stats.methods)
        self._write()
        self._task = asyncio.create_task(self._run(agent), name=f"metrics of sandbox {sb.id}")

    def vm_stopped(self) -> None:
        """Cancel the task and remove the snapshot: without a VM there is nothing to show."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._snapshot = None
        if self.sandbox is not None:
            snapshot.remove(self.sandbox.state_dir)

    async def _run(self, agent: AgentClient) -> None:
        await asyncio.sleep(FIRST_READING_DELAY)
        while True:
            await self._read_guest(agent)
            self._write()
            await asyncio.sleep(INTERVAL)

    async def _read_guest(self, agent: AgentClient) -> None:
        """One GuestStats reading into the snapshot; a failure keeps the previous figures."""
        assert self._snapshot is not None and self.sandbox is not None
        try:
            reply = await agent.guest_stats(timeout=FETCH_TIMEOUT)
        except (TtrpcError, ConnectionError) as exc:
            self._snapshot.guest_fetch_errors += 1
            log.debug("sandbox %s: guest figures not read: %s", self.sandbox.id, exc)
            return
        self._snapshot.guest = guest_figures(reply)

    def _write(self) -> None:
        """Save the snapshot with the current containers; a failed write is only logged (the
        monitor then shows the previous one), never the shim's problem."""
        snap, sb = self._snapshot, self.sandbox
        if snap is None or sb is None:
            return
        snap.containers = list(sb.state.containers)
        snap.written_at = time.time()
        try:
            snap.save(sb.state_dir)
        except FileNotFoundError:
            pass  # the state directory is being removed with the sandbox
        except OSError as exc:
            log.warning("sandbox %s: metrics snapshot not written: %s", sb.id, exc)
