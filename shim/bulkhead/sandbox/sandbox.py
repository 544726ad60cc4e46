"""One pod sandbox = one microVM: boots it on first use, owns its agent link and shared dir.

What it depends on comes in as arguments: the Launcher that starts its VM (QemuLauncher; a
fake in the unit tests), an observer told when the VM is up and gone (the metrics), and at
boot the SandboxPlan of its first container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Protocol

from bulkhead_wire.guest_abi import CTL_PORT_NAME, GUEST_SHARED_DIR, VSOCK_CTL_PORT
from bulkhead_wire.netlink.model import NetworkError
from bulkhead_wire.stdio.engines import open_link
from bulkhead_wire.stdio.link import StreamLink
from bulkhead_wire.ttrpc import Client, TtrpcError

from bulkhead.agent.client import AgentClient
from bulkhead.paths import sandbox_dir
from bulkhead.private_files import make_private_dir
from bulkhead.sandbox import host_cgroup
from bulkhead.sandbox.image_view import LayeredSnapshot
from bulkhead.sandbox.launcher import Launcher, VMRequest
from bulkhead.sandbox.plan import SandboxPlan
from bulkhead.sandbox.pod_network import PodNetwork
from bulkhead.sandbox.port_forward import PortForwarder
from bulkhead.sandbox.share import Share
from bulkhead.sandbox.state import SandboxState, remove_empty_parent
from bulkhead.vmm.base import OWN_NETNS_TAP, VirtualMachine, VMError
from bulkhead.vmm.process import describe_status

log = logging.getLogger(__name__)


class SandboxError(Exception):
    """The sandbox VM or its agent could not be brought up."""


class SandboxObserver(Protocol):
    """Hears about the sandbox's VM (the shim's metrics publisher)."""

    def cold_boot(self, reason: str) -> None:
        """Why the VM about to start boots cold instead of cloning a template."""

    def vm_started(self, sandbox: Sandbox) -> None:
        """The VM is up and its agent answers."""

    def vm_stopped(self) -> None:
        """The VM is gone (stopped or dead)."""


class NoObserver:
    """An observer that ignores everything (the default)."""

    def cold_boot(self, reason: str) -> None:
        """Nothing to record."""

    def vm_started(self, sandbox: Sandbox) -> None:
        """Nothing to record."""

    def vm_stopped(self) -> None:
        """Nothing to record."""


class Sandbox:
    """State and resources of one VM; containers of the pod share it."""

    def __init__(self, sandbox_id: str, namespace: str, socket: str, launcher: Launcher,
                 observer: SandboxObserver | None = None, state_dir: str = "") -> None:
        self.id = sandbox_id
        self.namespace = namespace
        self.state_dir = state_dir or sandbox_dir(namespace, sandbox_id)
        self.share = Share(self.state_dir)  # the 9p share, held by fds (share.py)
        self.state = SandboxState(sandbox_id, namespace, os.getpid(), socket)
        self.timings: dict[str, float] = {}  # host monotonic stamps of the boot phases
        self._launcher = launcher
        self._observer: SandboxObserver = observer or NoObserver()
        self._plan: SandboxPlan | None = None
        self._vm: VirtualMachine | None = None
        self._agent: AgentClient | None = None
        self._link: StreamLink | None = None  # the data channel's stdio link
        self._ctl: Client | None = None
        self._next_stream = 1
        self._boot_lock = asyncio.Lock()
        self._guest_uptimes: dict[str, float] = {}
        self._guest_zero: float | None = None  # host monotonic time of the guest's uptime 0
        self._vm_pid = 0
        self._restored = False
        self._network: PodNetwork | None = None
        self._port_forwarder: PortForwarder | None = None
        self._dead = ""
        self._vm_watch: asyncio.Task[None] | None = None

    # -- what the task service reads ----------------------------------------------------------

    @property
    def agent(self) -> AgentClient | None:
        """The agent of the running VM; None before boot and once the VM is gone."""
        return self._agent

    @property
    def link(self) -> StreamLink | None:
        """The data channel's stdio link while the VM runs."""
        return self._link

    @property
    def vm_pid(self) -> int:
        """QEMU's pid (the task pid containerd is told); 0 before boot."""
        return self._vm_pid

    @property
    def dead(self) -> str:
        """Why the VM is gone, once it died on its own; "" otherwise (never cleared)."""
        return self._dead

    @property
    def restored(self) -> bool:
        """The VM was cloned from a template."""
        return self._restored

    @property
    def plan(self) -> SandboxPlan | None:
        """What the VM booted with; None before its first boot."""
        return self._plan

    def prepare(self) -> None:
        """Create the state dir (only root may enter it) and the share's tmpfs, and record
        ourselves before anything else is created."""
        make_private_dir(self.state_dir)
        self.share.create()
        self.state.save(self.state_dir)

    def record_containers(self, ids: list[str]) -> None:
        """Persist the container list (`bulkhead ps` and the metrics read it)."""
        self.state.containers = sorted(ids)
        self.state.save(self.state_dir)

    def new_stream(self) -> int:
        """A fresh data-channel stream id."""
        stream = self._next_stream
        self._next_stream += 1
        return stream

    def guest_bundle(self, container_id: str) -> str:
        """Guest path of a container's bundle inside the shared directory."""
        return f"{GUEST_SHARED_DIR}/{container_id}"

    def staging_path(self, container_id: str) -> str:
        """A host-only path for the private mount that makes a read-only root's mount points."""
        return os.path.join(self.state_dir, f"rootfs-staging-{container_id}")

    def image_view(self, snapshot: LayeredSnapshot) -> str:
        """The share-root name of the guest's cached view of snapshot's image layers; a
        one-layer image's second layer is an empty host-only dir of the state dir."""
        return self.share.image_view(snapshot, os.path.join(self.state_dir, "empty-layer"))

    # -- boot ---------------------------------------------------------------------------------

    async def ensure_running(self, plan: SandboxPlan) -> AgentClient:
        """Boot the VM with plan and connect to its agent once; later callers reuse it (and
        their plans, made before the VM ran, are dropped)."""
        async with self._boot_lock:
            if self._agent is not None:
                return self._agent
            if self._dead:
                raise SandboxError(f"its VM is gone ({self._dead})")
            await self._boot(plan)
            assert self._agent is not None
            self._observer.vm_started(self)
            return self._agent

    async def _boot(self, plan: SandboxPlan) -> None:
        """Clone (or boot) the VM, take over both channels, check and set up the agent."""
        if plan.netns_path:
            try:
                self._network = await PodNetwork.attach(plan.netns_path, self.id)
            except NetworkError as exc:
                raise SandboxError(f"pod network: {exc}") from None
        tap_fd = self._network.tap.fd if self._network is not None else -1
        request = VMRequest(self.id, self.state_dir, self.share.path, tap_fd=tap_fd,
                            own_netns=not plan.netns_path and plan.own_netns)
        try:
            vm, link = await self._launcher.launch(plan.config, request,
                                                   self._observer.cold_boot)
        except VMError as exc:
            await self._detach_network()
            raise SandboxError(str(exc)) from None
        finally:
            if self._network is not None:
                self._network.release_fd()
        self._plan, self._vm, self._vm_pid = plan, vm, vm.pid
        self.timings.update(vm.timings)
        try:
            self._join_host_cgroup(plan.cgroups_path, vm.pid)
        except host_cgroup.HostCgroupError as exc:
            await self.stop_vm()
            raise SandboxError(str(exc)) from None
        channel_name = (f"virtio-serial port {CTL_PORT_NAME}" if vm.channel == "serial"
                        else f"vsock port {VSOCK_CTL_PORT}")
        ctl_reader, ctl_writer = link.ctl
        self._ctl = Client(ctl_reader, ctl_writer,
                           name=f"agent of sandbox {self.id} ({channel_name})")
        self._ctl.start()
        cfg = plan.config
        self._link = await open_link(link.data, cfg.io_engine, f"sandbox {self.id}")
        agent = AgentClient(self._ctl)
        try:  # both in flight at once: a round trip less on every sandbox start
            check, guest_engine = await asyncio.gather(
                agent.check(timeout=10.0),
                agent.setup_sandbox(plan.hostname, sysctls=dict(plan.vm_sysctls),
                                    io_engine=cfg.io_engine, debug_shell=cfg.debug_shell))
            if self._network is not None:
                await agent.configure_network(self._network.interfaces)
        except (TtrpcError, ConnectionError) as exc:
            tail = vm.console_tail()
            await self.stop_vm()
            raise SandboxError(f"agent on {channel_name} failed to check in and set up: {exc} "
                               f"(console tail: {tail})") from None
        self.timings["agent_ready"] = time.monotonic()
        self._restored = vm.restored
        if not self._restored:  # a clone's boot happened in its template, long ago
            self._guest_uptimes = {"kernel_start": 0.0, "init_start": check.init_start_uptime,
                                   "switch_root": check.switch_root_uptime,
                                   "agent_start": check.agent_start_uptime}
            self._guest_zero = self.timings["agent_ready"] - check.now_uptime
        self._agent = agent
        self._vm_watch = asyncio.create_task(self._watch_vm(vm))
        if plan.netns_path:
            self._start_port_forwarder(plan.netns_path)
        log.info("sandbox %s: VM pid %d up (%s, accel=%s, channel=%s, stdio engines host=%s "
                 "guest=%s, guest kernel %s)",
                 self.id, vm.pid, "cloned from a template" if self._restored else "cold boot",
                 vm.accel, vm.channel, self._link.engine, guest_engine, check.kernel_release)

    async def join_own_network(self) -> None:
        """Take into the guest what configured the VM's own namespace since Create (ctr
        --cni, nerdctl): runc's container would see it from its first instruction too."""
        if self._plan is None or not self._plan.own_netns or self._network is not None \
                or self._vm is None:
            return
        assert self._agent is not None
        netns = f"/proc/{self._vm_pid}/ns/net"
        try:
            self._network = await PodNetwork.join(netns, self.id, OWN_NETNS_TAP)
            if self._network is not None:
                await self._agent.configure_network(self._network.interfaces)
        except (NetworkError, TtrpcError) as exc:
            raise SandboxError(f"network of the VM's namespace {netns}: {exc}") from None
        if self._network is not None:
            log.info("sandbox %s: %s from %s joined to the VM's NIC", self.id,
                     self._network.interfaces[0].name, netns)

    def _start_port_forwarder(self, netns_path: str) -> None:
        """The CRI's PortForward dials into the pod's namespace: take it to the guest."""
        try:
            self._port_forwarder = PortForwarder.start(self, netns_path)
        except (OSError, NetworkError) as exc:
            log.warning("sandbox %s: no port forwarding: %s", self.id, exc)

    def _join_host_cgroup(self, cgroups_path: str, pid: int) -> None:
        """QEMU into the pod's host cgroup, recorded first so `delete` finds it after a crash."""
        if not cgroups_path:
            return
        self.state.host_cgroups = host_cgroup.cgroup_dirs(cgroups_path)
        self.state.save(self.state_dir)
        host_cgroup.join(self.state.host_cgroups, pid)

    async def _watch_vm(self, vm: VirtualMachine) -> None:
        """A VM that exits on its own takes its containers with it: drop the agent link so
        every pending call fails at once, and remember why for the exits and later calls."""
        status = await vm.wait()
        self._dead = f"QEMU pid {vm.pid} exited with {describe_status(status)}"
        log.error("sandbox %s: VM died: %s; its containers are reported killed "
                  "(console tail: %s)", self.id, self._dead, vm.console_tail(5) or "empty")
        self._vm_watch = None
        await self.stop_vm()

    def phases(self) -> dict[str, float]:
        """Boot phases in seconds since QEMU was started (host clock)."""
        t0 = self.timings.get("qemu_started")
        if t0 is None:
            return {}
        out = {"qemu_start": 0.0}
        zero = self._guest_zero
        if zero is not None:
            for name, up in self._guest_uptimes.items():
                out[name] = zero + up - t0
        for name, t in self.timings.items():
            if name != "qemu_started":
                out[name] = t - t0
        return dict(sorted(out.items(), key=lambda kv: kv[1]))

    # -- teardown -----------------------------------------------------------------------------

    async def stop_vm(self) -> None:
        """Drop the agent link and stop QEMU (always reaped)."""
        self._observer.vm_stopped()
        if self._vm_watch is not None:
            self._vm_watch.cancel()
            self._vm_watch = None
        self._agent = None
        forwarder, self._port_forwarder = self._port_forwarder, None
        if forwarder is not None:
            await forwarder.close()
        if self._ctl is not None:
            await self._ctl.close()
            self._ctl = None
        if self._link is not None:
            await self._link.close()
            self._link = None
        vm, self._vm = self._vm, None
        if vm is not None:
            await vm.stop()
        await self._detach_network()
        if self.state.host_cgroups:
            for path in host_cgroup.remove(self.state.host_cgroups):
                log.warning("sandbox %s: host cgroup %s still in use, left in place", self.id,
                            path)

    async def _detach_network(self) -> None:
        """The tap and its redirect go with the VM."""
        network, self._network = self._network, None
        if network is not None:
            await network.detach()

    async def destroy(self) -> None:
        """Stop the VM and remove every mount and file of the sandbox."""
        with contextlib.suppress(Exception):
            await self.stop_vm()
        for what in self.share.remove():
            log.warning("sandbox %s: %s left in place", self.id, what)
        remove_empty_parent(self.state_dir)
