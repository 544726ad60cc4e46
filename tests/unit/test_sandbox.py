"""Sandbox and its plan over fakes (tests/task_fakes.py): one boot however many callers, the
plan's inputs reach the launcher and the agent, and a VM that fails or dies is stopped and
reported, without QEMU."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from bulkhead.config import Config
from bulkhead.sandbox.plan import PlanError, SandboxPlan, plan_sandbox
from bulkhead.sandbox.sandbox import Sandbox, SandboxError
from bulkhead.sandbox.sizing import MEMORY
from bulkhead_wire.ttrpc import Code, TtrpcError
from task_fakes import VM_PID, FakeLauncher, RecordingObserver, ScriptedAgent

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the share is a tmpfs: needs root")
PLAN = SandboxPlan(config=Config(io_engine="python"), hostname="pod-a",
                   vm_sysctls={"net.ipv4.ip_forward": "1"})


def run(tmp_path: Path, case: Callable[[Sandbox, FakeLauncher, RecordingObserver],
                                       Awaitable[None]]) -> None:
    async def main() -> None:
        launcher = FakeLauncher(ScriptedAgent())
        observer = RecordingObserver()
        sandbox = Sandbox("sb1", "ns", "/run/shim.sock", launcher, observer,
                          state_dir=str(tmp_path / "sb1"))
        sandbox.prepare()
        try:
            await asyncio.wait_for(case(sandbox, launcher, observer), 20)
        finally:
            await sandbox.destroy()
        assert not (tmp_path / "sb1").exists()
    asyncio.run(main())


@needs_root
def test_one_boot_for_every_caller_with_the_plan(tmp_path: Path) -> None:
    async def case(sb: Sandbox, launcher: FakeLauncher, observer: RecordingObserver) -> None:
        other = SandboxPlan(config=Config(), hostname="late")
        agents = await asyncio.gather(sb.ensure_running(PLAN), sb.ensure_running(other))
        assert agents[0] is agents[1] is sb.agent
        (cfg, request), = launcher.requests
        assert cfg is PLAN.config and sb.plan is PLAN
        assert (request.name, request.shared_dir, request.tap_fd) == ("sb1", sb.share.path, -1)
        setup, = launcher.agent.setups
        assert (setup.hostname, dict(setup.sysctls)) == ("pod-a", {"net.ipv4.ip_forward": "1"})
        assert observer.heard == ["cold_boot", f"vm_started {VM_PID}"]
        assert sb.vm_pid == VM_PID and not sb.restored and "agent_ready" in sb.phases()
    run(tmp_path, case)


@needs_root
def test_an_agent_that_fails_setup_stops_the_vm(tmp_path: Path) -> None:
    async def case(sb: Sandbox, launcher: FakeLauncher, observer: RecordingObserver) -> None:
        launcher.agent.fail["SetupSandbox"] = TtrpcError(Code.INTERNAL, "no entropy")
        with pytest.raises(SandboxError, match="no entropy.*fake console"):
            await sb.ensure_running(PLAN)
        assert launcher.vms[0].stopped and sb.agent is None and sb.link is None
        assert observer.heard == ["cold_boot", "vm_stopped"]
    run(tmp_path, case)


@needs_root
def test_a_dead_vm_is_stopped_and_never_booted_again(tmp_path: Path) -> None:
    async def case(sb: Sandbox, launcher: FakeLauncher, observer: RecordingObserver) -> None:
        await sb.ensure_running(PLAN)
        launcher.vms[0].die()
        for _ in range(100):
            if sb.dead:
                break
            await asyncio.sleep(0.01)
        assert "exited with" in sb.dead and sb.agent is None
        assert observer.heard[-1] == "vm_stopped"
        with pytest.raises(SandboxError, match="its VM is gone"):
            await sb.ensure_running(PLAN)
        assert len(launcher.vms) == 1
    run(tmp_path, case)


def test_plan_of_a_lone_container() -> None:
    spec = {"linux": {"namespaces": [{"type": "network"}]}}
    plan = plan_sandbox("x" * 70, Config(), "c1", spec, {}, pod_sandbox=False)
    assert (plan.hostname, plan.netns_path, plan.own_netns) == ("x" * 63, "", True)
    assert plan.cgroups_path == "" and dict(plan.vm_sysctls) == {}


def test_plan_of_a_pod_sandbox() -> None:
    spec = {"hostname": "web-0", "linux": {
        "cgroupsPath": "/kubepods/pod1/sb1", "sysctl": {"net.core.somaxconn": "1024"},
        "namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}]}}
    plan = plan_sandbox("sb1", Config(memory_mib=512), "sb1", spec, {MEMORY: str(1 << 30)},
                        pod_sandbox=True)
    assert (plan.hostname, plan.netns_path, plan.own_netns) == ("web-0", "/var/run/netns/cni-1",
                                                                 False)
    assert plan.cgroups_path == "/kubepods/pod1/sb1" and plan.config.memory_mib > 1024
    assert dict(plan.vm_sysctls) == {"net.core.somaxconn": "1024"}
    with pytest.raises(TypeError):
        plan.vm_sysctls["x"] = "y"  # type: ignore[index]  # frozen, as the plan


def test_a_plan_refuses_what_no_vm_can_be() -> None:
    with pytest.raises(PlanError, match="pod sandbox sb1: cgroupsPath '/..' names no cgroup"):
        plan_sandbox("sb1", Config(), "sb1", {"linux": {"cgroupsPath": "/.."}}, {},
                     pod_sandbox=True)
    with pytest.raises(PlanError, match=MEMORY):
        plan_sandbox("sb1", Config(), "sb1", {}, {MEMORY: "lots"}, pod_sandbox=True)
    # outside a pod sandbox neither is the VM's business
    plan_sandbox("sb1", Config(), "c1", {"linux": {"cgroupsPath": "/.."}},
                 {MEMORY: "lots"}, pod_sandbox=False)
