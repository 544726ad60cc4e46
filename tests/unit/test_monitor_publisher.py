"""The shim's snapshot task against a real agent (the development agent on the host, as in
test_agent_service): figures arrive, every agent call is counted, and a frozen agent costs a
counted timeout, keeps the previous figures and never stalls the shim's loop."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bulkhead.agent.client import AgentClient
from bulkhead.monitor import publisher
from bulkhead.monitor.publisher import SnapshotPublisher, boot_phases
from bulkhead.monitor.snapshot import METRICS_FILE, Snapshot
from bulkhead.sandbox.state import SandboxState
from test_agent_service import AgentProcess, shim, start_agent, stop_agent

FETCH_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    ag = start_agent(tmp_path_factory.mktemp("agent"))
    try:
        yield ag
    finally:
        os.kill(ag.proc.pid, signal.SIGCONT)
        stop_agent(ag)


@dataclass
class FakeSandbox:
    """The fields of a Sandbox the publisher reads (the real one needs a VM)."""

    state_dir: str
    agent: AgentClient | None
    id: str = "sb1"
    namespace: str = "ns"
    vm_pid: int = 4242
    restored: bool = False
    state: SandboxState = field(default_factory=lambda: SandboxState("sb1", "ns", 1, "/s"))

    def phases(self) -> dict[str, float]:
        return {"accel_chosen": -0.05, "qemu_start": 0.0, "agent_ready": 3.25}


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "FIRST_READING_DELAY", 0.0)
    monkeypatch.setattr(publisher, "INTERVAL", 0.05)
    monkeypatch.setattr(publisher, "FETCH_TIMEOUT", FETCH_TIMEOUT)


async def wait_for(state_dir: str, check: object, timeout: float = 10.0) -> Snapshot:
    deadline = time.monotonic() + timeout
    while True:
        snap = Snapshot.load(state_dir)
        if snap is not None and callable(check) and check(snap):
            return snap
        assert time.monotonic() < deadline, f"snapshot never matched: {snap}"
        await asyncio.sleep(0.02)


def test_snapshot_carries_guest_figures_and_call_counts(agent: AgentProcess,
                                                        tmp_path: Path) -> None:
    async def run() -> Snapshot:
        async with shim(agent) as link:
            agent_client = AgentClient(link.client)
            sb = FakeSandbox(str(tmp_path), agent_client)
            pub = SnapshotPublisher()
            pub.cold_boot("no template: the test has none")
            pub.vm_started(sb)
            first = Snapshot.load(str(tmp_path))
            assert first is not None and first.guest is None  # written at once, figures later
            await agent_client.check()
            sb.state.containers = ["c1"]
            snap = await wait_for(str(tmp_path), lambda s: s.guest is not None and s.containers)
            pub.vm_stopped()
            assert not (tmp_path / METRICS_FILE).exists()
            return snap

    snap = asyncio.run(run())
    assert (snap.boot_mode, snap.template_miss) == ("cold", "no template: the test has none")
    assert snap.phases == {"accel_chosen": 0.0, "qemu_start": 0.05, "agent_ready": 3.3}
    assert snap.vm_pid == 4242 and snap.shim_pid == os.getpid()
    assert snap.guest is not None
    with open("/proc/meminfo") as f:  # the development agent reads the host's /proc
        assert snap.guest.memory_total_bytes == int(f.readline().split()[1]) * 1024
    assert snap.guest.cpu_seconds["idle"] > 0
    assert snap.rpc["Check"].count == 1 and snap.rpc["GuestStats"].count >= 1
    assert snap.guest_fetch_errors == 0 and not snap.rpc["GuestStats"].errors


def test_frozen_agent_is_a_counted_timeout_that_never_stalls_the_loop(agent: AgentProcess,
                                                                       tmp_path: Path) -> None:
    async def run() -> tuple[Snapshot, float]:
        async with shim(agent) as link:
            sb = FakeSandbox(str(tmp_path), AgentClient(link.client), restored=True)
            pub = SnapshotPublisher()
            pub.vm_started(sb)
            before = await wait_for(str(tmp_path), lambda s: s.guest is not None)
            os.kill(agent.proc.pid, signal.SIGSTOP)
            try:
                worst, last = 0.0, time.monotonic()  # the loop's longest gap while frozen
                end = last + 2 * FETCH_TIMEOUT + 0.2
                while time.monotonic() < end:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    worst, last = max(worst, now - last), now
                snap = await wait_for(str(tmp_path), lambda s: s.guest_fetch_errors >= 2)
            finally:
                os.kill(agent.proc.pid, signal.SIGCONT)
            assert snap.guest == before.guest  # the previous figures stay
            await wait_for(str(tmp_path), lambda s: s.guest != before.guest)  # and come back
            pub.vm_stopped()
            return snap, worst

    snap, worst = asyncio.run(run())
    assert snap.boot_mode == "template" and snap.template_miss == ""
    assert snap.rpc["GuestStats"].errors.get("deadline_exceeded", 0) >= 2
    # A fetch that blocked the loop would hold it for a whole FETCH_TIMEOUT.
    assert worst < FETCH_TIMEOUT, f"the loop stalled for {worst:.3f} s"


def test_boot_phases_start_at_zero() -> None:
    assert boot_phases({}) == {}
    assert boot_phases({"spawn": -0.1, "qemu_start": 0.0}) == {"spawn": 0.0, "qemu_start": 0.1}
