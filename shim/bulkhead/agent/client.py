"""Typed calls to bulkhead-agent's control API over ttrpc."""

from __future__ import annotations

import os

from bulkhead_wire.guest_abi import AGENT_SERVICE
from bulkhead_wire.netlink.model import Interface
from bulkhead_wire.proto import agent_pb2
from bulkhead_wire.ttrpc import Client
from google.protobuf import empty_pb2

from bulkhead.agent.rpc_stats import RpcStats
from bulkhead.agent.timed_client import TimedClient

SIGNAL_DEADLINE = 10.0  # a signal is delivered at once by a working agent


class AgentClient:
    """One method per agent RPC; errors surface as TtrpcError with the agent's message."""

    def __init__(self, client: Client) -> None:
        self.rpc_stats = RpcStats()  # every call's latency and failure, for the metrics
        self._client = TimedClient(client, self.rpc_stats)

    async def check(self, timeout: float = 10.0) -> agent_pb2.CheckResponse:
        """Health check plus the guest's boot phase uptimes."""
        return await self._client.call(AGENT_SERVICE, "Check", agent_pb2.CheckRequest(),
                                       agent_pb2.CheckResponse, timeout)

    async def create_container(self, container_id: str, bundle: str, terminal: bool,
                               streams: tuple[int, int, int], rootfs_lower: str = "") -> int:
        """crun create in the guest; returns the guest pid of the container init. rootfs_lower:
        the image view the agent assembles the root on ("": the bundle's rootfs as is)."""
        req = agent_pb2.CreateContainerRequest(
            container_id=container_id, bundle=bundle, terminal=terminal,
            rootfs_lower=rootfs_lower,
            stdio=agent_pb2.StdioStreams(stdin=streams[0], stdout=streams[1],
                                         stderr=streams[2]))
        resp = await self._client.call(AGENT_SERVICE, "CreateContainer", req,
                                       agent_pb2.CreateContainerResponse)
        return resp.pid

    async def exec_process(self, container_id: str, exec_id: str, terminal: bool,
                           streams: tuple[int, int, int], process_json: bytes) -> None:
        """Register an exec process (run by start_process) with its stdio streams."""
        req = agent_pb2.ExecProcessRequest(
            container_id=container_id, exec_id=exec_id, terminal=terminal,
            stdio=agent_pb2.StdioStreams(stdin=streams[0], stdout=streams[1],
                                         stderr=streams[2]),
            process=process_json)
        await self._client.call(AGENT_SERVICE, "ExecProcess", req, empty_pb2.Empty)

    async def start_process(self, container_id: str, exec_id: str = "") -> int:
        """Start the init (or an exec) process; returns its guest pid."""
        resp = await self._client.call(
            AGENT_SERVICE, "StartProcess",
            agent_pb2.StartProcessRequest(container_id=container_id, exec_id=exec_id),
            agent_pb2.StartProcessResponse)
        return resp.pid

    async def wait_process(self, container_id: str,
                           exec_id: str = "") -> agent_pb2.WaitProcessResponse:
        """Block until the process exited and its output was sent."""
        return await self._client.call(
            AGENT_SERVICE, "WaitProcess",
            agent_pb2.WaitProcessRequest(container_id=container_id, exec_id=exec_id),
            agent_pb2.WaitProcessResponse, timeout=None)

    async def signal_process(self, container_id: str, exec_id: str, signal: int,
                             all_processes: bool = False) -> None:
        """Deliver a signal inside the guest."""
        await self._client.call(
            AGENT_SERVICE, "SignalProcess",
            agent_pb2.SignalProcessRequest(container_id=container_id, exec_id=exec_id,
                                           signal=signal, all=all_processes),
            empty_pb2.Empty, timeout=SIGNAL_DEADLINE)

    async def resize_pty(self, container_id: str, exec_id: str, width: int,
                         height: int) -> None:
        """Window size of a terminal process."""
        await self._client.call(
            AGENT_SERVICE, "ResizePty",
            agent_pb2.ResizePtyRequest(container_id=container_id, exec_id=exec_id, width=width,
                                       height=height),
            empty_pb2.Empty)

    async def delete_process(self, container_id: str, exec_id: str) -> None:
        """Forget an exec that is no longer running."""
        await self._client.call(
            AGENT_SERVICE, "DeleteProcess",
            agent_pb2.DeleteProcessRequest(container_id=container_id, exec_id=exec_id),
            empty_pb2.Empty)

    async def list_pids(self, container_id: str) -> list[agent_pb2.ProcessPid]:
        """Guest pids of the container's processes, execs marked with their id."""
        resp = await self._client.call(AGENT_SERVICE, "ListPids",
                                       agent_pb2.ListPidsRequest(container_id=container_id),
                                       agent_pb2.ListPidsResponse)
        return list(resp.processes)

    async def pause(self, container_id: str) -> None:
        """Freeze the container's cgroup."""
        await self._container_call("PauseContainer", container_id)

    async def resume(self, container_id: str) -> None:
        """Thaw the container's cgroup."""
        await self._container_call("ResumeContainer", container_id)

    async def _container_call(self, method: str, container_id: str) -> None:
        await self._client.call(AGENT_SERVICE, method,
                                agent_pb2.ContainerRequest(container_id=container_id),
                                empty_pb2.Empty)

    async def update(self, container_id: str, resources_json: bytes) -> None:
        """Apply OCI LinuxResources to the container's cgroup."""
        await self._client.call(
            AGENT_SERVICE, "UpdateContainer",
            agent_pb2.UpdateContainerRequest(container_id=container_id,
                                             resources=resources_json),
            empty_pb2.Empty)

    async def stats(self, container_id: str) -> bytes:
        """cgroup v2 metrics of the container (a serialized io.containerd.cgroups.v2.Metrics)."""
        resp = await self._client.call(AGENT_SERVICE, "ContainerStats",
                                       agent_pb2.ContainerRequest(container_id=container_id),
                                       agent_pb2.ContainerStatsResponse)
        return resp.metrics

    async def guest_stats(self, timeout: float) -> agent_pb2.GuestStatsResponse:
        """The whole guest's memory and CPU time."""
        return await self._client.call(AGENT_SERVICE, "GuestStats", empty_pb2.Empty(),
                                       agent_pb2.GuestStatsResponse, timeout)

    async def wait_oom(self) -> agent_pb2.OOMEvent:
        """Long poll: the next OOM kill recorded in any container."""
        return await self._client.call(AGENT_SERVICE, "WaitOOM", empty_pb2.Empty(),
                                       agent_pb2.OOMEvent, timeout=None)

    async def setup_sandbox(self, hostname: str, mount_share: bool = True,
                            sysctls: dict[str, str] | None = None, io_engine: str = "c",
                            debug_shell: bool = False) -> str:
        """Fresh entropy, the host's wall clock, the hostname, the pod's VM-wide sysctls, the
        share and the stdio engine: what a new VM (a template clone above all) must take before
        it runs anything for the sandbox. Returns the engine the guest's end uses."""
        req = agent_pb2.SetupSandboxRequest(entropy=os.urandom(64), hostname=hostname,
                                            mount_share=mount_share, sysctls=sysctls or {},
                                            io_engine=io_engine, debug_shell=debug_shell)
        req.wall_clock.GetCurrentTime()
        resp = await self._client.call(AGENT_SERVICE, "SetupSandbox", req,
                                       agent_pb2.SetupSandboxResponse, timeout=10.0)
        return resp.io_engine

    async def forward_port(self, port: int, to_guest: int, from_guest: int) -> None:
        """Have the agent connect to port on the VM's loopback, relayed over two streams."""
        req = agent_pb2.ForwardPortRequest(port=port, to_guest_stream=to_guest,
                                           from_guest_stream=from_guest)
        await self._client.call(AGENT_SERVICE, "ForwardPort", req, empty_pb2.Empty, timeout=10.0)

    async def configure_network(self, interfaces: list[Interface]) -> None:
        """Give the guest the pod's interfaces (their traffic reaches its NIC through a tap)."""
        from google.protobuf import json_format

        req = agent_pb2.ConfigureNetworkRequest()
        for interface in interfaces:
            json_format.ParseDict(interface.to_dict(), req.interfaces.add())
        await self._client.call(AGENT_SERVICE, "ConfigureNetwork", req, empty_pb2.Empty,
                                timeout=30.0)

    async def prepare_template(self) -> None:
        """Warm the guest for its clones; it announces READY on the console once hung up."""
        await self._client.call(AGENT_SERVICE, "PrepareTemplate", empty_pb2.Empty(),
                                empty_pb2.Empty, timeout=60.0)

    async def remove_container(self, container_id: str) -> None:
        """crun delete --force and forget the container."""
        await self._client.call(AGENT_SERVICE, "RemoveContainer",
                                agent_pb2.RemoveContainerRequest(container_id=container_id),
                                empty_pb2.Empty, timeout=10.0)
