"""The bulkhead.agent.v1.Agent ttrpc service: decode requests, call the Supervisor, map errors."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bulkhead_wire.proto import agent_pb2
from bulkhead_wire.ttrpc import Code, TtrpcError
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from bulkhead_agent import __version__
from bulkhead_agent.bootinfo import BootInfo, uptime
from bulkhead_agent.container import Supervisor
from bulkhead_agent.errors import AgentError, FailedPrecondition
from bulkhead_agent.procio import Streams
from bulkhead_agent.template_prep import TemplatePrep

if TYPE_CHECKING:
    from bulkhead_agent.control import ContainerControl
    from bulkhead_agent.debug_shell import DebugShell
    from bulkhead_agent.port_forward import PortForwards

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def rpc(name: str) -> Callable[[Callable[[Any, Req], Awaitable[Resp]]],
                               Callable[[Any, Req], Awaitable[Resp]]]:
    """Turn agent errors into the status code they name; anything else is INTERNAL, logged."""

    def wrap(fn: Callable[[Any, Req], Awaitable[Resp]]) -> Callable[[Any, Req], Awaitable[Resp]]:
        @functools.wraps(fn)
        async def handler(self: Any, req: Req) -> Resp:
            try:
                return await fn(self, req)
            except AgentError as exc:
                log.info("%s: %s", name, exc)
                raise TtrpcError(Code(exc.code), str(exc)) from None
            except (TtrpcError, asyncio.CancelledError):
                raise
            except Exception as exc:
                log.exception("%s failed", name)
                raise TtrpcError(Code.INTERNAL, f"{name}: {exc}") from None

        return handler

    return wrap


class AgentService:
    """Handlers for every method of agent.proto's Agent service."""

    def __init__(self, supervisor: Supervisor, boot: BootInfo,
                 template: TemplatePrep | None = None) -> None:
        self.supervisor = supervisor
        self.template = template or TemplatePrep()
        self.boot = boot
        self._debug_shell: DebugShell | None = None

    @functools.cached_property
    def control(self) -> ContainerControl:
        """Pause/update/stats, imported on first use: every import slows the agent's TCG boot."""
        from bulkhead_agent.control import ContainerControl

        return ContainerControl(self.supervisor)

    def methods(self) -> dict[str, tuple[type[Message], Callable[[Any], Awaitable[Message]]]]:
        """The method table for bulkhead_wire.ttrpc.Server.register(AGENT_SERVICE, ...)."""
        return {
            "Check": (agent_pb2.CheckRequest, self.check),
            "CreateContainer": (agent_pb2.CreateContainerRequest, self.create_container),
            "ExecProcess": (agent_pb2.ExecProcessRequest, self.exec_process),
            "StartProcess": (agent_pb2.StartProcessRequest, self.start_process),
            "WaitProcess": (agent_pb2.WaitProcessRequest, self.wait_process),
            "SignalProcess": (agent_pb2.SignalProcessRequest, self.signal_process),
            "ResizePty": (agent_pb2.ResizePtyRequest, self.resize_pty),
            "DeleteProcess": (agent_pb2.DeleteProcessRequest, self.delete_process),
            "ListPids": (agent_pb2.ListPidsRequest, self.list_pids),
            "PauseContainer": (agent_pb2.ContainerRequest, self.pause_container),
            "ResumeContainer": (agent_pb2.ContainerRequest, self.resume_container),
            "UpdateContainer": (agent_pb2.UpdateContainerRequest, self.update_container),
            "ContainerStats": (agent_pb2.ContainerRequest, self.container_stats),
            "GuestStats": (empty_pb2.Empty, self.guest_stats),
            "WaitOOM": (empty_pb2.Empty, self.wait_oom),
            "SetupSandbox": (agent_pb2.SetupSandboxRequest, self.setup_sandbox),
            "PrepareTemplate": (empty_pb2.Empty, self.prepare_template),
            "ConfigureNetwork": (agent_pb2.ConfigureNetworkRequest, self.configure_network),
            "ForwardPort": (agent_pb2.ForwardPortRequest, self.forward_port),
            "RemoveContainer": (agent_pb2.RemoveContainerRequest, self.remove_container),
        }

    @rpc("Check")
    async def check(self, req: agent_pb2.CheckRequest) -> agent_pb2.CheckResponse:
        """Liveness plus boot phase timings."""
        return agent_pb2.CheckResponse(
            agent_version=__version__, kernel_release=os.uname().release,
            init_start_uptime=self.boot.init_start, switch_root_uptime=self.boot.switch_root,
            agent_start_uptime=self.boot.agent_start, now_uptime=uptime())

    @rpc("CreateContainer")
    async def create_container(self, req: agent_pb2.CreateContainerRequest
                               ) -> agent_pb2.CreateContainerResponse:
        """crun create with stdio pipes joined to the requested data-channel streams."""
        streams = Streams(req.stdio.stdin, req.stdio.stdout, req.stdio.stderr)
        pid = await self.supervisor.create(req.container_id, req.bundle, req.terminal, streams,
                                           req.rootfs_lower)
        return agent_pb2.CreateContainerResponse(pid=pid)

    @rpc("ExecProcess")
    async def exec_process(self, req: agent_pb2.ExecProcessRequest) -> empty_pb2.Empty:
        """Register an exec process; StartProcess runs it."""
        streams = Streams(req.stdio.stdin, req.stdio.stdout, req.stdio.stderr)
        await self.supervisor.exec(req.container_id, req.exec_id, req.terminal, streams,
                                   req.process)
        return empty_pb2.Empty()

    @rpc("StartProcess")
    async def start_process(self, req: agent_pb2.StartProcessRequest
                            ) -> agent_pb2.StartProcessResponse:
        """crun start for the init, crun exec --detach for an exec."""
        pid = await self.supervisor.start(req.container_id, req.exec_id)
        return agent_pb2.StartProcessResponse(pid=pid)

    @rpc("WaitProcess")
    async def wait_process(self, req: agent_pb2.WaitProcessRequest
                           ) -> agent_pb2.WaitProcessResponse:
        """Exit status once the process exited and all its output was sent."""
        proc = await self.supervisor.wait(req.container_id, req.exec_id)
        info = proc.exit
        assert info is not None
        marks = proc.output_marks or {}
        streams = proc.io.streams
        resp = agent_pb2.WaitProcessResponse(
            exit_status=info.status, oom_kills=proc.oom_kills,
            stdout_bytes=marks.get(streams.stdout, 0), stderr_bytes=marks.get(streams.stderr, 0))
        resp.exited_at.FromNanoseconds(info.exited_at_ns)
        return resp

    @rpc("SignalProcess")
    async def signal_process(self, req: agent_pb2.SignalProcessRequest) -> empty_pb2.Empty:
        """kill(2) the process, or every process of the container with `all`."""
        await self.supervisor.signal(req.container_id, req.exec_id, req.signal, req.all)
        return empty_pb2.Empty()

    @rpc("ResizePty")
    async def resize_pty(self, req: agent_pb2.ResizePtyRequest) -> empty_pb2.Empty:
        """Window size of a terminal process."""
        self.supervisor.resize(req.container_id, req.exec_id, req.width, req.height)
        return empty_pb2.Empty()

    @rpc("DeleteProcess")
    async def delete_process(self, req: agent_pb2.DeleteProcessRequest) -> empty_pb2.Empty:
        """Forget an exec that is not running."""
        await self.supervisor.delete_process(req.container_id, req.exec_id)
        return empty_pb2.Empty()

    @rpc("ListPids")
    async def list_pids(self, req: agent_pb2.ListPidsRequest) -> agent_pb2.ListPidsResponse:
        """Pids of the container's cgroup, execs marked."""
        return agent_pb2.ListPidsResponse(processes=[
            agent_pb2.ProcessPid(pid=pid, exec_id=exec_id)
            for pid, exec_id in self.supervisor.list_pids(req.container_id)])

    @rpc("PauseContainer")
    async def pause_container(self, req: agent_pb2.ContainerRequest) -> empty_pb2.Empty:
        """Freeze the container's cgroup."""
        await self.control.pause(req.container_id)
        return empty_pb2.Empty()

    @rpc("ResumeContainer")
    async def resume_container(self, req: agent_pb2.ContainerRequest) -> empty_pb2.Empty:
        """Thaw the container's cgroup."""
        await self.control.resume(req.container_id)
        return empty_pb2.Empty()

    @rpc("UpdateContainer")
    async def update_container(self, req: agent_pb2.UpdateContainerRequest) -> empty_pb2.Empty:
        """New cgroup limits from OCI LinuxResources JSON."""
        await self.control.update(req.container_id, req.resources)
        return empty_pb2.Empty()

    @rpc("ContainerStats")
    async def container_stats(self, req: agent_pb2.ContainerRequest
                              ) -> agent_pb2.ContainerStatsResponse:
        """cgroup v2 metrics of the container."""
        metrics = self.control.stats(req.container_id)
        return agent_pb2.ContainerStatsResponse(metrics=metrics.SerializeToString())

    @rpc("GuestStats")
    async def guest_stats(self, req: empty_pb2.Empty) -> agent_pb2.GuestStatsResponse:
        """The whole guest's memory and CPU time (imported on first use, like control)."""
        from bulkhead_agent import guest_stats

        return guest_stats.collect()

    @rpc("WaitOOM")
    async def wait_oom(self, req: empty_pb2.Empty) -> agent_pb2.OOMEvent:
        """Long poll for the next OOM kill in any container."""
        container_id, count = await self.supervisor.oom.next_event()
        return agent_pb2.OOMEvent(container_id=container_id, oom_kills=count)

    @rpc("RemoveContainer")
    async def remove_container(self, req: agent_pb2.RemoveContainerRequest) -> empty_pb2.Empty:
        """crun delete -f and forget the container."""
        await self.supervisor.remove(req.container_id)
        return empty_pb2.Empty()

    @rpc("SetupSandbox")
    async def setup_sandbox(self, req: agent_pb2.SetupSandboxRequest
                            ) -> agent_pb2.SetupSandboxResponse:
        """RNG, clock, hostname, share and stdio engine for this sandbox (after a boot or a
        restore)."""
        from bulkhead_agent import vm_setup

        link = await self.supervisor.data.open(req.io_engine)
        try:
            vm_setup.setup(req.entropy, req.wall_clock.ToNanoseconds(), req.hostname,
                           req.mount_share, dict(req.sysctls))
        except vm_setup.SetupError as exc:
            raise FailedPrecondition(f"sandbox setup: {exc}") from None
        if req.debug_shell:
            from bulkhead_agent.debug_shell import DebugShell

            if self._debug_shell is None:
                self._debug_shell = DebugShell(self.supervisor.reaper)
            self._debug_shell.start()
        return agent_pb2.SetupSandboxResponse(io_engine=link.engine)

    @functools.cached_property
    def port_forwards(self) -> PortForwards:
        """Relays of the CRI's PortForward, loaded on first use."""
        from bulkhead_agent.port_forward import PortForwards

        return PortForwards()

    @rpc("ForwardPort")
    async def forward_port(self, req: agent_pb2.ForwardPortRequest) -> empty_pb2.Empty:
        """Connect to a port on the VM's loopback and relay it over two streams."""
        link = await self.supervisor.data.open()
        await self.port_forwards.open(link, req.port, req.to_guest_stream,
                                      req.from_guest_stream)
        return empty_pb2.Empty()

    @rpc("ConfigureNetwork")
    async def configure_network(self, req: agent_pb2.ConfigureNetworkRequest
                                ) -> empty_pb2.Empty:
        """The pod's interfaces on the guest's NIC (MAC, MTU, addresses, routes)."""
        from bulkhead_wire.netlink.model import Interface, NetworkError
        from google.protobuf import json_format

        from bulkhead_agent import network

        try:
            interfaces = [Interface.from_dict(json_format.MessageToDict(
                i, preserving_proto_field_name=True)) for i in req.interfaces]
            await network.configure(interfaces)
        except NetworkError as exc:
            raise FailedPrecondition(f"pod network: {exc}") from None
        return empty_pb2.Empty()

    @rpc("PrepareTemplate")
    async def prepare_template(self, req: empty_pb2.Empty) -> empty_pb2.Empty:
        """Warm what clones need; announce on the console when idle for the snapshot."""
        if self.supervisor.containers():
            raise FailedPrecondition("a VM with containers cannot become a template")
        await self.template.prepare(self.supervisor.crun, self.supervisor.state_dir)
        return empty_pb2.Empty()
