"""Fakes for fast unit tests of the shim's core (Sandbox, TaskService, ExitReporter): a VM that
is a few sockets, a launcher that hands it out, a scripted agent served over real ttrpc on the
VM's control channel, and an event recorder. No QEMU, no containerd: milliseconds per case."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulkhead.config import Config
from bulkhead.sandbox.launcher import VMRequest
from bulkhead.sandbox.sandbox import Sandbox
from bulkhead.shim.task_service import TaskService
from bulkhead.vmm.base import AgentLink, VMError
from bulkhead_wire.guest_abi import AGENT_SERVICE
from bulkhead_wire.proto import agent_pb2, task_pb2
from bulkhead_wire.ttrpc import Code, Server, TtrpcError
from google.protobuf import empty_pb2
from google.protobuf.message import Message

VM_PID = 4242
KILLED = 128 + signal.SIGKILL


class FakeVM:
    """A VirtualMachine whose QEMU is a future: die() ends it as a crash would."""

    def __init__(self, restored: bool = False) -> None:
        self.pid = VM_PID
        self.accel = "tcg"
        self.channel = "serial"
        self.timings = {"qemu_started": time.monotonic()}
        self._restored = restored
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.stopped = False

    @property
    def restored(self) -> bool:
        return self._restored

    async def start(self) -> AgentLink:
        raise AssertionError("the launcher starts a FakeVM")

    async def stop(self, timeout: float = 3.0) -> None:
        self.stopped = True
        if not self._exit.done():
            self._exit.set_result(-signal.SIGTERM)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def die(self, status: int = -signal.SIGKILL) -> None:
        """QEMU exits on its own (killed from outside, or the guest crashed it)."""
        if not self._exit.done():
            self._exit.set_result(status)

    def console_tail(self, lines: int = 20) -> str:
        return "fake console"


@dataclass
class GuestProcess:
    """One process the scripted agent pretends to run."""

    exit: asyncio.Future[int]
    started: bool = False


class ScriptedAgent:
    """bulkhead-agent's control API as a script: processes exit when the test (or a signal)
    says so; every call is recorded; `fail` makes a method answer with an error."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (method, container[/exec])
        self.fail: dict[str, TtrpcError] = {}
        self.procs: dict[tuple[str, str], GuestProcess] = {}
        self.exec_exit_delay = 0.05  # the guest reports a killed init before its execs
        self.setups: list[agent_pb2.SetupSandboxRequest] = []

    def exit(self, container_id: str, exec_id: str = "", status: int = 0) -> None:
        """The process ends in the guest with status."""
        fut = self.procs[(container_id, exec_id)].exit
        if not fut.done():
            fut.set_result(status)

    def _new(self, container_id: str, exec_id: str) -> None:
        self.procs[(container_id, exec_id)] = GuestProcess(
            asyncio.get_running_loop().create_future())

    def server(self) -> Server:
        server = Server()
        table: dict[str, tuple[type[Message], Callable[[Any], Any]]] = {
            "Check": (agent_pb2.CheckRequest, self._check),
            "SetupSandbox": (agent_pb2.SetupSandboxRequest, self._setup),
            "CreateContainer": (agent_pb2.CreateContainerRequest, self._create),
            "ExecProcess": (agent_pb2.ExecProcessRequest, self._exec),
            "StartProcess": (agent_pb2.StartProcessRequest, self._start),
            "WaitProcess": (agent_pb2.WaitProcessRequest, self._wait),
            "SignalProcess": (agent_pb2.SignalProcessRequest, self._signal),
            "DeleteProcess": (agent_pb2.DeleteProcessRequest, self._empty("DeleteProcess")),
            "RemoveContainer": (agent_pb2.RemoveContainerRequest,
                                self._empty("RemoveContainer")),
            "WaitOOM": (empty_pb2.Empty, self._wait_oom),
        }
        server.register(AGENT_SERVICE, {name: (req, self._recorded(name, handler))
                                  for name, (req, handler) in table.items()})
        return server

    def _recorded(self, name: str, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def call(req: Any) -> Message:
            who = getattr(req, "container_id", "")
            if getattr(req, "exec_id", ""):
                who += "/" + req.exec_id
            self.calls.append((name, who))
            if name in self.fail:
                raise self.fail[name]
            result: Message = await handler(req)
            return result
        return call

    def _empty(self, name: str) -> Callable[[Any], Any]:
        async def handler(_: Any) -> Message:
            return empty_pb2.Empty()
        return handler

    async def _check(self, _: agent_pb2.CheckRequest) -> agent_pb2.CheckResponse:
        return agent_pb2.CheckResponse(agent_version="scripted", kernel_release="fake",
                                       now_uptime=1.0)

    async def _setup(self, req: agent_pb2.SetupSandboxRequest
                     ) -> agent_pb2.SetupSandboxResponse:
        self.setups.append(req)
        return agent_pb2.SetupSandboxResponse(io_engine="python")

    async def _create(self, req: agent_pb2.CreateContainerRequest
                      ) -> agent_pb2.CreateContainerResponse:
        self._new(req.container_id, "")
        return agent_pb2.CreateContainerResponse(pid=100 + len(self.procs))

    async def _exec(self, req: agent_pb2.ExecProcessRequest) -> empty_pb2.Empty:
        self._new(req.container_id, req.exec_id)
        return empty_pb2.Empty()

    async def _start(self, req: agent_pb2.StartProcessRequest) -> agent_pb2.StartProcessResponse:
        proc = self.procs.get((req.container_id, req.exec_id))
        if proc is None:
            raise TtrpcError(Code.NOT_FOUND, f"process {req.container_id}/{req.exec_id}")
        proc.started = True
        return agent_pb2.StartProcessResponse(pid=200 + len(self.procs))

    async def _wait(self, req: agent_pb2.WaitProcessRequest) -> agent_pb2.WaitProcessResponse:
        status = await self.procs[(req.container_id, req.exec_id)].exit
        resp = agent_pb2.WaitProcessResponse(exit_status=status)
        resp.exited_at.GetCurrentTime()
        return resp

    async def _signal(self, req: agent_pb2.SignalProcessRequest) -> empty_pb2.Empty:
        if req.signal in (signal.SIGKILL, signal.SIGTERM):
            self.exit(req.container_id, req.exec_id, 128 + req.signal)
            if not req.exec_id:  # the guest's init goes first; its execs follow it
                await asyncio.sleep(self.exec_exit_delay)
                for (cid, eid), proc in self.procs.items():
                    if cid == req.container_id and eid and not proc.exit.done():
                        proc.exit.set_result(KILLED)
        return empty_pb2.Empty()

    async def _wait_oom(self, _: empty_pb2.Empty) -> agent_pb2.OOMEvent:
        await asyncio.Event().wait()
        return agent_pb2.OOMEvent()


class FakeLauncher:
    """Hands out FakeVMs whose control channel is served by one ScriptedAgent."""

    def __init__(self, agent: ScriptedAgent) -> None:
        self.agent = agent
        self.vms: list[FakeVM] = []
        self.requests: list[tuple[Config, VMRequest]] = []
        self.fail: VMError | None = None
        self._keep: list[Any] = []  # the guest ends, alive as long as the launcher

    async def launch(self, cfg: Config, request: VMRequest,
                     on_cold_boot: Callable[[str], None]) -> tuple[FakeVM, AgentLink]:
        self.requests.append((cfg, request))
        if self.fail is not None:
            raise self.fail
        on_cold_boot("a fake VM has no template")
        host_ctl, guest_ctl = socket.socketpair()
        host_data, guest_data = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=guest_ctl)
        serving = asyncio.create_task(self.agent.server().serve_connection(reader, writer))
        self._keep += [guest_data, serving]
        vm = FakeVM()
        self.vms.append(vm)
        return vm, AgentLink(await asyncio.open_unix_connection(sock=host_ctl), host_data)


@dataclass
class RecordingObserver:
    """A SandboxObserver that notes what it heard."""

    heard: list[str] = field(default_factory=list)

    def cold_boot(self, reason: str) -> None:
        self.heard.append("cold_boot")

    def vm_started(self, sandbox: Sandbox) -> None:
        self.heard.append(f"vm_started {sandbox.vm_pid}")

    def vm_stopped(self) -> None:
        self.heard.append("vm_stopped")


@dataclass
class RecordingEvents:
    """An EventSink that keeps every event, in order."""

    published: list[tuple[str, Message]] = field(default_factory=list)

    def publish(self, topic: str, event: Message) -> None:
        self.published.append((topic, event))

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.published]

    def exits(self) -> list[tuple[str, int]]:
        """(process id, status) of every /tasks/exit, in order."""
        return [(ev.id, ev.exit_status) for topic, ev in self.published  # type: ignore[attr-defined]
                if topic == "/tasks/exit"]


def write_bundle(root: Path, container_id: str, annotations: dict[str, str] | None = None
                 ) -> str:
    """A bundle with a config.json and an empty rootfs directory (a bind, no containerd)."""
    bundle = root / container_id
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    spec = {"ociVersion": "1.1.0", "process": {"args": ["sh"], "cwd": "/"},
            "root": {"path": "rootfs"}, "hostname": container_id,
            "annotations": annotations or {},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}}
    (bundle / "config.json").write_text(json.dumps(spec))
    return str(bundle)


@dataclass
class Shim:
    """One shim daemon's core over fakes: the real Sandbox and TaskService."""

    service: TaskService
    sandbox: Sandbox
    agent: ScriptedAgent
    launcher: FakeLauncher
    events: RecordingEvents
    root: Path
    shutdowns: list[bool]

    @classmethod
    def make(cls, root: Path, sandbox_id: str = "sb1") -> Shim:
        agent = ScriptedAgent()
        launcher = FakeLauncher(agent)
        events = RecordingEvents()
        state_dir = root / "state" / sandbox_id
        sandbox = Sandbox(sandbox_id, "ns", str(root / "shim.sock"), launcher,
                          state_dir=str(state_dir))
        sandbox.prepare()
        shutdowns: list[bool] = []
        service = TaskService(sandbox, events, lambda: shutdowns.append(True),
                              Config(io_engine="python"))
        return cls(service, sandbox, agent, launcher, events, root, shutdowns)

    async def create(self, container_id: str, **fields: Any) -> task_pb2.CreateTaskResponse:
        bundle = write_bundle(self.root / "bundles", container_id, fields.pop("annotations", None))
        return await self.service.create(task_pb2.CreateTaskRequest(
            id=container_id, bundle=bundle, **fields))

    async def run(self, container_id: str) -> None:
        """Create and start a container's init."""
        await self.create(container_id)
        await self.service.start(task_pb2.StartRequest(id=container_id))

    async def exec(self, container_id: str, exec_id: str) -> None:
        """Add and start an exec."""
        spec = json.dumps({"args": ["sleep", "1"], "cwd": "/"}).encode()
        req = task_pb2.ExecProcessRequest(id=container_id, exec_id=exec_id)
        req.spec.value = spec
        await self.service.exec(req)
        await self.service.start(task_pb2.StartRequest(id=container_id, exec_id=exec_id))

    async def wait(self, container_id: str, exec_id: str = "",
                   timeout: float = 5.0) -> task_pb2.WaitResponse:
        return await asyncio.wait_for(
            self.service.wait(task_pb2.WaitRequest(id=container_id, exec_id=exec_id)), timeout)

    async def close(self) -> None:
        """What the daemon's cleanup does; the share's mounts go with it."""
        self.service.exits.stop()
        await self.sandbox.destroy()
        assert not os.path.exists(self.sandbox.state_dir)
