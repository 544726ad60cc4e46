"""One pod sandbox = one microVM: boots it on first use, owns its agent link and shared dir."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time

from bulkhead_wire.netlink.model import NetworkError
from bulkhead_wire.stdio.engines import open_link
from bulkhead_wire.stdio.link import StreamLink
from bulkhead_wire.ttrpc import Client, TtrpcError

from bulkhead.config import Config
from bulkhead.monitor.publisher import SnapshotPublisher
from bulkhead.paths import sandbox_dir
from bulkhead.private_files import make_private_dir
from bulkhead.sandbox import host_cgroup
from bulkhead.sandbox.agent_client import AgentClient
from bulkhead.sandbox.pod_network import PodNetwork
from bulkhead.sandbox.port_forward import PortForwarder
from bulkhead.sandbox.share import Share
from bulkhead.sandbox.state import SandboxState, remove_empty_parent
from bulkhead.sandbox.vm_boot import start_vm, vm_config
from bulkhead.vmm.base import OWN_NETNS_TAP, VMError
from bulkhead.vmm.process import describe_status
from bulkhead.vmm.qemu import QemuVM

log = logging.getLogger(__name__)

GUEST_SHARED_DIR = "/run/bulkhead/shared"  # where the guest init mounts the 9p share


class SandboxError(Exception):
    """The sandbox VM or its agent could not be brought up."""


class Sandbox:
    """State and resources of one VM; containers of the pod share it."""

    def __init__(self, sandbox_id: str, namespace: str, socket: str, config: Config) -> None:
        self.id = sandbox_id
        self.namespace = namespace
        self.config = config
        self.state_dir = sandbox_dir(namespace, sandbox_id)
        self.share = Share(self.state_dir)  # the 9p share, held by fds (share.py)
        self.shared_dir = self.share.path
        self.state = SandboxState(sandbox_id, namespace, os.getpid(), socket)
        self.vm: QemuVM | None = None
        self.agent: AgentClient | None = None
        self.link: StreamLink | None = None  # the data channel's stdio link
        self.io_engines = ("", "")  # (host, guest) ends of the data channel
        self._ctl: Client | None = None
        self._next_stream = 1
        self._boot_lock = asyncio.Lock()
        self.timings: dict[str, float] = {}
        self.guest_uptimes: dict[str, float] = {}
        self._guest_zero: float | None = None  # host monotonic time of the guest's uptime 0
        self.vm_pid = 0
        self.restored = False  # the VM was cloned from a template
        self.hostname = sandbox_id[:63]  # the VM's own; a pod's from its sandbox spec
        self.netns_path = ""  # the pod's network namespace (CRI); "" for a lone container
        self.own_netns = False  # a lone container asking for a new one: QEMU's own, at Start
        self.vm_sysctls: dict[str, str] = {}  # the pod's, for namespaces the VM's own
        self.cgroups_path = ""  # the pod sandbox's host cgroup (CRI), where QEMU runs
        self.network: PodNetwork | None = None
        self.port_forwarder: PortForwarder | None = None
        self.dead = ""  # why the VM is gone, once it died on its own (never cleared)
        self._vm_watch: asyncio.Task[None] | None = None
        self.metrics = SnapshotPublisher(self)  # metrics.json for `bulkhead monitor`

    def prepare(self) -> None:
        """Create the state dir (only root may enter it) and the share's tmpfs, and record
        ourselves before anything else is created."""
        make_private_dir(self.state_dir)
        self.share.create()
        self.state.save(self.state_dir)

    def record_containers(self, ids: list[str]) -> None:
        """Persist the container list for cleanup after a crash."""
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

    async def ensure_running(self) -> AgentClient:
        """Boot the VM and connect to its agent once; later callers reuse it."""
        async with self._boot_lock:
            if self.agent is not None:
                return self.agent
            if self.dead:
                raise SandboxError(f"its VM is gone ({self.dead})")
            await self._boot()
            self.metrics.start()
            assert self.agent is not None
            return self.agent

    async def _boot(self) -> None:
        """Clone (or boot) the VM, take over both channels, check and set up the agent."""
        cfg = self.config
        image = cfg.guest_image()
        config = vm_config(cfg, image, self.id, self.state_dir, self.shared_dir)
        if self.netns_path:
            try:
                self.network = await PodNetwork.attach(self.netns_path, self.id)
            except NetworkError as exc:
                raise SandboxError(f"pod network: {exc}") from None
            if self.network is not None:
                config = dataclasses.replace(config, tap_fd=self.network.tap.fd)
        elif self.own_netns:
            config = dataclasses.replace(config, own_netns=True)
        try:
            vm, link = await start_vm(cfg.boot, config, image, self.metrics.cold_boot)
        except VMError as exc:
            await self._detach_network()
            raise SandboxError(str(exc)) from None
        finally:
            if self.network is not None:
                self.network.release_fd()
        self.vm = vm
        self.vm_pid = vm.pid
        self.timings.update(vm.timings)
        try:
            self._join_host_cgroup(vm.pid)
        except host_cgroup.HostCgroupError as exc:
            await self.stop_vm()
            raise SandboxError(str(exc)) from None
        channel_name = ("virtio-serial port bulkhead.ctl" if vm.channel == "serial"
                        else "vsock port 1024")
        ctl_reader, ctl_writer = link.ctl
        self._ctl = Client(ctl_reader, ctl_writer,
                           name=f"agent of sandbox {self.id} ({channel_name})")
        self._ctl.start()
        self.link = await open_link(link.data, cfg.io_engine, f"sandbox {self.id}")
        agent = AgentClient(self._ctl)
        try:  # both in flight at once: a round trip less on every sandbox start
            check, guest_engine = await asyncio.gather(
                agent.check(timeout=10.0),
                agent.setup_sandbox(self.hostname, sysctls=self.vm_sysctls,
                                    io_engine=cfg.io_engine, debug_shell=cfg.debug_shell))
            self.io_engines = (self.link.engine, guest_engine)
            if self.network is not None:
                await agent.configure_network(self.network.interfaces)
        except (TtrpcError, ConnectionError) as exc:
            tail = vm.console_tail()
            await self.stop_vm()
            raise SandboxError(f"agent on {channel_name} failed to check in and set up: {exc} "
                               f"(console tail: {tail})") from None
        self.timings["agent_ready"] = time.monotonic()
        self.restored = vm.config.restore_from is not None
        if not self.restored:  # a clone's boot happened in its template, long ago
            self.guest_uptimes = {"kernel_start": 0.0, "init_start": check.init_start_uptime,
                                  "switch_root": check.switch_root_uptime,
                                  "agent_start": check.agent_start_uptime}
            self._guest_zero = self.timings["agent_ready"] - check.now_uptime
        self.agent = agent
        self._vm_watch = asyncio.create_task(self._watch_vm(vm))
        if self.netns_path:
            self._start_port_forwarder()
        log.info("sandbox %s: VM pid %d up (%s, accel=%s, channel=%s, stdio engines host=%s "
                 "guest=%s, guest kernel %s)",
                 self.id, vm.pid, "cloned from a template" if self.restored else "cold boot",
                 vm.accel, vm.channel, *self.io_engines, check.kernel_release)

    async def join_own_network(self) -> None:
        """Take into the guest what configured the VM's own namespace since Create (ctr
        --cni, nerdctl): runc's container would see it from its first instruction too."""
        if not self.own_netns or self.network is not None or self.vm is None:
            return
        assert self.agent is not None
        netns = f"/proc/{self.vm_pid}/ns/net"
        try:
            self.network = await PodNetwork.join(netns, self.id, OWN_NETNS_TAP)
            if self.network is not None:
                await self.agent.configure_network(self.network.interfaces)
        except (NetworkError, TtrpcError) as exc:
            raise SandboxError(f"network of the VM's namespace {netns}: {exc}") from None
        if self.network is not None:
            log.info("sandbox %s: %s from %s joined to the VM's NIC", self.id,
                     self.network.interfaces[0].name, netns)

    def _start_port_forwarder(self) -> None:
        """The CRI's PortForward dials into the pod's namespace: take it to the guest."""
        try:
            self.port_forwarder = PortForwarder.start(self, self.netns_path)
        except (OSError, NetworkError) as exc:
            log.warning("sandbox %s: no port forwarding: %s", self.id, exc)

    def _join_host_cgroup(self, pid: int) -> None:
        """QEMU into the pod's host cgroup, recorded first so `delete` finds it after a crash."""
        if not self.cgroups_path:
            return
        self.state.host_cgroups = host_cgroup.cgroup_dirs(self.cgroups_path)
        self.state.save(self.state_dir)
        host_cgroup.join(self.state.host_cgroups, pid)

    async def _watch_vm(self, vm: QemuVM) -> None:
        """A VM that exits on its own takes its containers with it: drop the agent link so
        every pending call fails at once, and remember why for the exits and later calls."""
        status = await vm.wait()
        self.dead = f"QEMU pid {vm.pid} exited with {describe_status(status)}"
        log.error("sandbox %s: VM died: %s; its containers are reported killed "
                  "(console tail: %s)", self.id, self.dead, vm.console_tail(5) or "empty")
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
            for name, up in self.guest_uptimes.items():
                out[name] = zero + up - t0
        for name, t in self.timings.items():
            if name != "qemu_started":
                out[name] = t - t0
        return dict(sorted(out.items(), key=lambda kv: kv[1]))

    async def stop_vm(self) -> None:
        """Drop the agent link and stop QEMU (always reaped)."""
        self.metrics.stop()
        if self._vm_watch is not None:
            self._vm_watch.cancel()
            self._vm_watch = None
        self.agent = None
        forwarder, self.port_forwarder = self.port_forwarder, None
        if forwarder is not None:
            await forwarder.close()
        if self._ctl is not None:
            await self._ctl.close()
            self._ctl = None
        if self.link is not None:
            await self.link.close()
            self.link = None
        vm, self.vm = self.vm, None
        if vm is not None:
            await vm.stop()
        await self._detach_network()
        if self.state.host_cgroups:
            for path in host_cgroup.remove(self.state.host_cgroups):
                log.warning("sandbox %s: host cgroup %s still in use, left in place", self.id,
                            path)

    async def _detach_network(self) -> None:
        """The tap and its redirect go with the VM."""
        network, self.network = self.network, None
        if network is not None:
            await network.detach()

    async def destroy(self) -> None:
        """Stop the VM and remove every mount and file of the sandbox."""
        with contextlib.suppress(Exception):
            await self.stop_vm()
        for what in self.share.remove():
            log.warning("sandbox %s: %s left in place", self.id, what)
        remove_empty_parent(self.state_dir)
