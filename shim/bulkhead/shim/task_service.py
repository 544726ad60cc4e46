"""containerd.task.v2.Task (also served as v3): every RPC, backed by one sandbox VM.

Lookups, error codes and event order (as containerd's runc shim gives them,
`cmd/containerd-shim-runc-v2/task/service.go`) live here; the guest does the work through the
agent, Create (and its undo) is `create.CreateCall`, exits are reported by
`exits.ExitReporter`, cgroup-level calls (pause, resume, update, stats) are in `resources.py`.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bulkhead_wire.checks import check_id, parse_process_spec
from bulkhead_wire.proto import (
    events_pb2,
    runc_details_pb2,
    task_pb2,
)
from bulkhead_wire.ttrpc import Code, TtrpcError
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from bulkhead.agent.client import AgentClient
from bulkhead.config import Config
from bulkhead.sandbox.sandbox import Sandbox, SandboxError
from bulkhead.shim import resources
from bulkhead.shim.create import CreateCall, open_io
from bulkhead.shim.events import EventSink
from bulkhead.shim.exits import ExitReporter
from bulkhead.shim.log_format import with_ids
from bulkhead.shim.task import Container, Exit, Process, Status

log = logging.getLogger(__name__)

SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")
PROCESS_SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"
Handler = Callable[[Any], Awaitable[Message]]


def _not_found(task_id: str) -> TtrpcError:
    return TtrpcError(Code.NOT_FOUND, f"container {task_id} not created: not found")


class TaskService:
    """Every Task RPC; one instance per shim daemon (one sandbox)."""

    def __init__(self, sandbox: Sandbox, events: EventSink,
                 on_empty_shutdown: Callable[[], None], config: Config,
                 config_error: str = "") -> None:
        self.sandbox = sandbox
        self.events = events
        self.tasks: dict[str, Container] = {}
        self.exits = ExitReporter(sandbox, events, self.tasks)
        self._creation = CreateCall(sandbox, events, self.tasks, self.exits, config, config_error)
        self._on_empty_shutdown = on_empty_shutdown

    def methods(self) -> dict[str, tuple[type[Message], Handler]]:
        """The ttrpc method table: all 17 RPCs of the Task service."""
        res = resources.ResourceCalls(self.sandbox, self.events, self._container)
        table: dict[str, tuple[type[Message], Handler]] = {
            "Create": (task_pb2.CreateTaskRequest, self.create),
            "Start": (task_pb2.StartRequest, self.start),
            "State": (task_pb2.StateRequest, self.state),
            "Wait": (task_pb2.WaitRequest, self.wait),
            "Kill": (task_pb2.KillRequest, self.kill),
            "Exec": (task_pb2.ExecProcessRequest, self.exec),
            "ResizePty": (task_pb2.ResizePtyRequest, self.resize_pty),
            "CloseIO": (task_pb2.CloseIORequest, self.close_io),
            "Delete": (task_pb2.DeleteRequest, self.delete),
            "Pids": (task_pb2.PidsRequest, self.pids),
            "Connect": (task_pb2.ConnectRequest, self.connect),
            "Shutdown": (task_pb2.ShutdownRequest, self.shutdown),
            "Pause": (task_pb2.PauseRequest, res.pause),
            "Resume": (task_pb2.ResumeRequest, res.resume),
            "Update": (task_pb2.UpdateTaskRequest, res.update),
            "Stats": (task_pb2.StatsRequest, res.stats),
            "Checkpoint": (task_pb2.CheckpointTaskRequest, res.checkpoint),
        }
        return {name: (request, with_ids(handler)) for name, (request, handler) in table.items()}

    def _container(self, task_id: str) -> Container:
        container = self.tasks.get(task_id)
        if container is None:
            raise _not_found(task_id)
        return container

    def _process(self, task_id: str, exec_id: str) -> Process:
        return self._container(task_id).process(exec_id)

    def _agent_or_gone(self, proc: Process) -> AgentClient:
        """The agent, or the NotFound containerd expects for a process that cannot run now."""
        agent = self.sandbox.agent
        if agent is None:
            raise TtrpcError(Code.NOT_FOUND, f"{proc.name}: the sandbox VM is not running "
                                             f"({self.sandbox.dead or 'stopped'}): not found")
        return agent

    # -- Create ------------------------------------------------------------------------------

    async def create(self, req: task_pb2.CreateTaskRequest) -> task_pb2.CreateTaskResponse:
        """Boot the VM if needed, share the bundle, open stdio and crun-create in the guest."""
        return await self._creation.create(req)

    # -- Exec / Start ------------------------------------------------------------------------

    async def exec(self, req: task_pb2.ExecProcessRequest) -> empty_pb2.Empty:
        """Register an exec in the guest with its stdio; Start runs it."""
        container = self._container(req.id)
        try:
            check_id("exec", req.exec_id)
            parse_process_spec(req.spec.value, f"exec {req.exec_id}")
        except ValueError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None
        if req.exec_id in container.execs:
            raise TtrpcError(Code.ALREADY_EXISTS, f"id {req.exec_id}: already exists")
        if req.spec.type_url and req.spec.type_url != PROCESS_SPEC_TYPE:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"exec {req.exec_id}: spec type "
                                                    f"{req.spec.type_url!r} is not an OCI Process")
        if container.status != Status.RUNNING:
            state = container.status.name.lower()
            raise TtrpcError(Code.FAILED_PRECONDITION,
                             f"cannot exec in container {req.id}: it is {state}")
        agent = self._agent_or_gone(container.init)
        io = await open_io(self.sandbox, req.exec_id, req.stdin, req.stdout, req.stderr,
                           req.terminal)
        proc = Process(req.id, req.exec_id, req.stdin, req.stdout, req.stderr, req.terminal, io)
        container.execs[req.exec_id] = proc
        try:
            assert self.sandbox.link is not None
            io.start_output(self.sandbox.link)
            await agent.exec_process(req.id, req.exec_id, req.terminal, io.stream_ids,
                                     req.spec.value)
        except BaseException:
            container.execs.pop(req.exec_id, None)
            await io.close()
            raise
        self.events.publish("/tasks/exec-added",
                            events_pb2.TaskExecAdded(container_id=req.id, exec_id=req.exec_id))
        return empty_pb2.Empty()

    async def start(self, req: task_pb2.StartRequest) -> task_pb2.StartResponse:
        """Start the init or an exec; its start event is queued before any exit can be."""
        container = self._container(req.id)
        proc = container.process(req.exec_id)
        if proc.status != Status.CREATED:
            raise TtrpcError(Code.FAILED_PRECONDITION,
                             f"{proc.name} is {proc.status.name.lower()}, not created")
        agent = self._agent_or_gone(proc)
        async with proc.start_lock:
            if not req.exec_id:
                await self._join_own_network(proc)
            try:
                await agent.start_process(req.id, req.exec_id)
            except BaseException:
                await proc.io.close()  # EOF on its FIFOs: the client stops waiting for output
                raise
            proc.timings["started"] = time.monotonic()
            proc.status = Status.RUNNING
            if req.exec_id:
                assert self.sandbox.link is not None
                proc.io.start_input(self.sandbox.link)
                self.exits.watch(container, proc)
                self.events.publish("/tasks/exec-started", events_pb2.TaskExecStarted(
                    container_id=req.id, exec_id=req.exec_id, pid=self.sandbox.vm_pid))
            else:
                self.events.publish("/tasks/start", events_pb2.TaskStart(
                    container_id=req.id, pid=self.sandbox.vm_pid))
                if container.hooks is not None:
                    await container.hooks.started(self.sandbox.vm_pid)
        return task_pb2.StartResponse(pid=self.sandbox.vm_pid)

    async def _join_own_network(self, proc: Process) -> None:
        """Before an init starts: the network configured in its VM's namespace since Create."""
        try:
            await self.sandbox.join_own_network()
        except SandboxError as exc:
            await proc.io.close()
            raise TtrpcError(Code.FAILED_PRECONDITION,
                             f"{proc.name}: sandbox {self.sandbox.id}: {exc}") from None

    # -- queries -----------------------------------------------------------------------------

    async def state(self, req: task_pb2.StateRequest) -> task_pb2.StateResponse:
        """Status, pid and stdio of the init or an exec."""
        container = self._container(req.id)
        proc = container.process(req.exec_id)
        status = container.status if not req.exec_id else proc.status
        return task_pb2.StateResponse(
            id=proc.id, bundle=container.bundle, pid=self.sandbox.vm_pid,
            status=status.name, stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr,
            terminal=proc.terminal, exit_status=proc.exit.status if proc.exit else 0,
            exited_at=proc.exited_at(), exec_id=req.exec_id)

    async def wait(self, req: task_pb2.WaitRequest) -> task_pb2.WaitResponse:
        """Block until the exit is known; every caller gets the same stored result."""
        proc = self._process(req.id, req.exec_id)
        await proc.exited.wait()
        assert proc.exit is not None
        return task_pb2.WaitResponse(exit_status=proc.exit.status, exited_at=proc.exit.at)

    async def pids(self, req: task_pb2.PidsRequest) -> task_pb2.PidsResponse:
        """Guest processes of the container; execs carry their exec id (ProcessDetails)."""
        container = self._container(req.id)
        agent = self.sandbox.agent
        if agent is None or container.init.exit is not None:
            return task_pb2.PidsResponse()
        out = task_pb2.PidsResponse()
        for p in await agent.list_pids(req.id):
            info = out.processes.add(pid=p.pid)
            if p.exec_id:
                details = runc_details_pb2.ProcessDetails(exec_id=p.exec_id)
                info.info.CopyFrom(any_pb2.Any(type_url=details.DESCRIPTOR.full_name,
                                               value=details.SerializeToString()))
        return out

    async def connect(self, req: task_pb2.ConnectRequest) -> task_pb2.ConnectResponse:
        """The shim pid and the task pid (the VM's: the host process that runs the task)."""
        task_pid = self.sandbox.vm_pid if req.id in self.tasks else 0
        return task_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=task_pid,
                                        version="bulkhead")

    # -- control -----------------------------------------------------------------------------

    async def kill(self, req: task_pb2.KillRequest) -> empty_pb2.Empty:
        """Signal a process in the guest; an exited one is NotFound, as containerd expects."""
        proc = self._process(req.id, req.exec_id)
        if proc.exit is not None:
            raise TtrpcError(Code.NOT_FOUND, "process already finished: not found")
        if req.exec_id and proc.status == Status.CREATED:
            raise TtrpcError(Code.FAILED_PRECONDITION, f"{proc.name}: process not created")
        agent = self._agent_or_gone(proc)
        try:
            await agent.signal_process(req.id, req.exec_id, req.signal, req.all)
        except TtrpcError as exc:
            if exc.code != Code.DEADLINE_EXCEEDED or not self._is_pod_kill(req):
                raise
            # A guest that does not answer a SIGKILL of the pod itself cannot hold the host:
            # stop its VM, whose exit reports every container killed.
            log.warning("sandbox %s: the agent did not answer SIGKILL (%s): stopping the VM",
                        self.sandbox.id, exc)
            await self.sandbox.stop_vm()
        except ConnectionError as exc:
            # The VM died under the call (its exit report is on the way): the process is
            # gone, which is what containerd's StopContainer needs to hear.
            raise TtrpcError(Code.NOT_FOUND, f"{proc.name}: the sandbox VM is gone "
                                             f"({self.sandbox.dead or exc}): not found") from None
        return empty_pb2.Empty()

    def _is_pod_kill(self, req: task_pb2.KillRequest) -> bool:
        """SIGKILL of the sandbox's own container (the VM's task): the pod is going away."""
        return req.id == self.sandbox.id and not req.exec_id and req.signal == signal.SIGKILL

    async def close_io(self, req: task_pb2.CloseIORequest) -> empty_pb2.Empty:
        """Close stdin once what the client wrote is forwarded (EOF for the process)."""
        proc = self._process(req.id, req.exec_id)
        if req.stdin:
            proc.io.close_stdin()
        return empty_pb2.Empty()

    async def resize_pty(self, req: task_pb2.ResizePtyRequest) -> empty_pb2.Empty:
        """Window size of the process's terminal."""
        proc = self._process(req.id, req.exec_id)
        if not proc.terminal:
            raise TtrpcError(Code.FAILED_PRECONDITION, f"{proc.name} has no terminal")
        if proc.exit is None:
            agent = self._agent_or_gone(proc)
            await agent.resize_pty(req.id, req.exec_id, req.width, req.height)
        return empty_pb2.Empty()

    async def delete(self, req: task_pb2.DeleteRequest) -> task_pb2.DeleteResponse:
        """Remove an exec, or the container from the guest and the host (/tasks/delete)."""
        container = self._container(req.id)
        proc = container.process(req.exec_id)
        if proc.status in (Status.RUNNING, Status.PAUSED):
            raise TtrpcError(Code.FAILED_PRECONDITION,
                             f"{proc.name} is running: kill it before delete")
        if req.exec_id:
            exit_ = await self._delete_exec(container, proc)
        else:
            exit_ = await self._delete_container(container)
        return task_pb2.DeleteResponse(pid=self.sandbox.vm_pid, exit_status=exit_.status,
                                       exited_at=exit_.at)

    async def _delete_exec(self, container: Container, proc: Process) -> Exit:
        """Forget an exec in the guest and release its host stdio (runc sends no event)."""
        agent = self.sandbox.agent
        if agent is not None:
            try:
                await agent.delete_process(container.id, proc.exec_id)
            except (TtrpcError, ConnectionError) as exc:
                log.warning("delete %s in guest: %s", proc.name, exc)
        proc.set_exit(proc.exit or Exit.now(0))
        container.execs.pop(proc.exec_id, None)
        await proc.io.close()
        assert proc.exit is not None
        return proc.exit

    async def _delete_container(self, container: Container) -> Exit:
        """Remove the container in the guest, then every host resource it had.

        The sandbox's last container skips the guest's `crun delete`: its VM stops right after.
        """
        agent = self.sandbox.agent
        if agent is not None and set(self.tasks) != {container.id}:
            try:
                await agent.remove_container(container.id)
            except (TtrpcError, ConnectionError) as exc:
                log.warning("remove %s in guest: %s", container.id, exc)
        if container.hooks is not None:
            await container.hooks.stopped()
        init = container.init
        init.set_exit(init.exit or Exit.now(0))  # deleted before it ever ran
        assert init.exit is not None
        exit_ = init.exit
        await self._creation.forget(container)
        self.events.publish("/tasks/delete", events_pb2.TaskDelete(
            container_id=container.id, pid=self.sandbox.vm_pid, exit_status=exit_.status,
            exited_at=exit_.at))
        return exit_

    async def shutdown(self, req: task_pb2.ShutdownRequest) -> empty_pb2.Empty:
        """Exit once no task remains: answer at once, clean up everything, then exit."""
        if not self.tasks:
            self._on_empty_shutdown()
        return empty_pb2.Empty()
