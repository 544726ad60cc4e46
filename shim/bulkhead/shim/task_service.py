"""containerd.task.v2.Task (also served as v3) backed by one sandbox VM."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from bulkhead import config as config_mod
from bulkhead.proto import events_pb2, runtimeoptions_pb2, task_pb2, task_types_pb2
from bulkhead.sandbox.guest_spec import SpecError, for_guest, host_root_path, load_spec
from bulkhead.sandbox.mounts import MountError, unmount_all_under
from bulkhead.sandbox.rootfs import RootfsError, mount_rootfs
from bulkhead.sandbox.sandbox import Sandbox, SandboxError
from bulkhead.shim.events import EventPublisher
from bulkhead.shim.task import Exit, Status, Task
from bulkhead.stdio.host import ProcessIO, StdioError
from bulkhead.ttrpc import Code, TtrpcError

log = logging.getLogger(__name__)

SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")


def _not_found(task_id: str) -> TtrpcError:
    return TtrpcError(Code.NOT_FOUND, f"container {task_id} not created: not found")


class TaskService:
    """Every Task RPC; one instance per shim daemon (one sandbox)."""

    def __init__(self, sandbox: Sandbox, events: EventPublisher,
                 on_empty_shutdown: Callable[[], Awaitable[None]],
                 config_error: str = "") -> None:
        self.sandbox = sandbox
        self.config_error = config_error
        self.events = events
        self.tasks: dict[str, Task] = {}
        self._on_empty_shutdown = on_empty_shutdown

    def methods(self) -> dict[str, tuple[type[Message], Callable[[Message], Awaitable[Message]]]]:
        """The ttrpc method table (unsupported RPCs answer Unimplemented)."""
        table: dict[str, tuple[type[Message], Callable[..., Awaitable[Message]]]] = {
            "Create": (task_pb2.CreateTaskRequest, self.create),
            "Start": (task_pb2.StartRequest, self.start),
            "State": (task_pb2.StateRequest, self.state),
            "Wait": (task_pb2.WaitRequest, self.wait),
            "Kill": (task_pb2.KillRequest, self.kill),
            "Delete": (task_pb2.DeleteRequest, self.delete),
            "Pids": (task_pb2.PidsRequest, self.pids),
            "Connect": (task_pb2.ConnectRequest, self.connect),
            "Shutdown": (task_pb2.ShutdownRequest, self.shutdown),
            "CloseIO": (task_pb2.CloseIORequest, self.close_io),
        }
        for name, req in (("Pause", task_pb2.PauseRequest), ("Resume", task_pb2.ResumeRequest),
                          ("Checkpoint", task_pb2.CheckpointTaskRequest),
                          ("Exec", task_pb2.ExecProcessRequest),
                          ("ResizePty", task_pb2.ResizePtyRequest),
                          ("Update", task_pb2.UpdateTaskRequest),
                          ("Stats", task_pb2.StatsRequest)):
            table[name] = (req, self._unimplemented(name))
        return table

    @staticmethod
    def _unimplemented(name: str) -> Callable[[Message], Awaitable[Message]]:
        async def handler(_: Message) -> Message:
            raise TtrpcError(Code.UNIMPLEMENTED, f"{name} is not implemented by bulkhead yet")
        return handler

    def _get(self, task_id: str, exec_id: str = "") -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise _not_found(task_id)
        if exec_id:
            raise TtrpcError(Code.NOT_FOUND, f"process {exec_id} does not exist in {task_id}")
        return task

    # -- Create ------------------------------------------------------------------------------

    async def create(self, req: task_pb2.CreateTaskRequest) -> task_pb2.CreateTaskResponse:
        """Boot the VM if needed, share the rootfs, open stdio and crun-create in the guest."""
        if req.id in self.tasks:
            raise TtrpcError(Code.ALREADY_EXISTS, f"container {req.id}: already exists")
        if req.terminal:
            raise TtrpcError(Code.INVALID_ARGUMENT, "terminal (TTY) containers are not "
                                                    "supported by bulkhead yet")
        t_create = time.monotonic()
        try:
            spec = load_spec(req.bundle)
        except SpecError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None
        sb = self.sandbox
        own_config = self._apply_runtime_options(req)
        if self.config_error and not own_config:
            raise TtrpcError(Code.INVALID_ARGUMENT, self.config_error)
        try:
            io = ProcessIO.open(req.stdin, req.stdout, req.stderr, sb.new_stream)
        except StdioError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None
        task = Task(req.id, req.bundle, req.stdin, req.stdout, req.stderr, req.terminal, io)
        task.timings["create"] = t_create
        self.tasks[req.id] = task
        sb.record_containers(list(self.tasks))
        try:
            await self._create_in_guest(task, req, spec)
        except BaseException:
            await self._forget(task)
            raise
        task.timings["created"] = time.monotonic()
        task.waiter = asyncio.create_task(self._wait_exit(task))
        ev = events_pb2.TaskCreate(
            container_id=req.id, bundle=req.bundle, checkpoint=req.checkpoint,
            pid=sb.vm_pid, io=events_pb2.TaskIO(stdin=req.stdin, stdout=req.stdout,
                                                stderr=req.stderr, terminal=req.terminal))
        ev.rootfs.extend(req.rootfs)
        self.events.publish("/tasks/create", ev)
        return task_pb2.CreateTaskResponse(pid=sb.vm_pid)

    def _apply_runtime_options(self, req: task_pb2.CreateTaskRequest) -> bool:
        """`--runtime-config-path` / CRI ConfigPath: a config file for this sandbox's VM.

        Returns True if the request carried a config file (which then replaces the default).
        """
        if not req.options.type_url.endswith("runtimeoptions.v1.Options"):
            return False
        opts = runtimeoptions_pb2.Options.FromString(req.options.value)
        if not opts.config_path or self.sandbox.agent is not None:
            return False
        if not os.path.isfile(opts.config_path):
            raise TtrpcError(Code.INVALID_ARGUMENT,
                             f"runtime config {opts.config_path}: no such file")
        try:
            self.sandbox.config = config_mod.load(opts.config_path)
        except config_mod.ConfigError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"runtime config {exc}") from None
        return True

    async def _create_in_guest(self, task: Task, req: task_pb2.CreateTaskRequest,
                               spec: dict[str, Any]) -> None:
        """The steps of Create that touch the VM; any failure is reported with its cause."""
        sb = self.sandbox
        try:
            agent = await sb.ensure_running()
        except SandboxError as exc:
            raise TtrpcError(Code.UNAVAILABLE, f"sandbox {sb.id}: {exc}") from None
        host_bundle = sb.host_bundle(req.id)
        os.makedirs(host_bundle, exist_ok=True)
        try:
            mount_rootfs(list(req.rootfs), os.path.join(host_bundle, "rootfs"),
                         host_root_path(spec, req.bundle))
        except (RootfsError, MountError) as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"rootfs of {req.id}: {exc}") from None
        import json

        with open(os.path.join(host_bundle, "config.json"), "w") as f:
            json.dump(for_guest(spec, req.id), f)
        assert sb.channel is not None
        task.io.start_output(sb.channel, lambda n: self._first_output(task))
        task.guest_pid = await agent.create_container(
            req.id, sb.guest_bundle(req.id), req.terminal, task.io.stream_ids)
        task.io.start_input(sb.channel)

    @staticmethod
    def _first_output(task: Task) -> None:
        task.timings.setdefault("first_output", time.monotonic())

    async def _forget(self, task: Task) -> None:
        """Undo a task's host resources (and the VM if nothing else uses it)."""
        task.io.close()
        self.tasks.pop(task.id, None)
        host_bundle = self.sandbox.host_bundle(task.id)
        unmount_all_under(host_bundle)
        shutil.rmtree(host_bundle, ignore_errors=True)
        self.sandbox.record_containers(list(self.tasks))
        if not self.tasks:
            await self.sandbox.stop_vm()

    # -- Start / exit ------------------------------------------------------------------------

    async def start(self, req: task_pb2.StartRequest) -> task_pb2.StartResponse:
        """Start the init process; the start event is queued before any exit can be."""
        task = self._get(req.id, req.exec_id)
        if task.status != Status.CREATED:
            raise TtrpcError(Code.FAILED_PRECONDITION,
                             f"container {req.id} is {task.status.name.lower()}, not created")
        agent = self.sandbox.agent
        if agent is None:
            raise TtrpcError(Code.UNAVAILABLE, f"sandbox {self.sandbox.id} is not running")
        async with task.start_lock:
            await agent.start_process(req.id)
            task.timings["started"] = time.monotonic()
            task.status = Status.RUNNING
            self.events.publish("/tasks/start",
                                events_pb2.TaskStart(container_id=req.id, pid=self.sandbox.vm_pid))
        return task_pb2.StartResponse(pid=self.sandbox.vm_pid)

    async def _wait_exit(self, task: Task) -> None:
        """Wait for the guest exit, then for every output byte to reach the host sink."""
        agent = self.sandbox.agent
        status, at = 255, timestamp_pb2.Timestamp()
        try:
            assert agent is not None
            resp = await agent.wait_process(task.id)
            status, at = resp.exit_status, resp.exited_at
        except (TtrpcError, ConnectionError) as exc:
            log.error("wait for %s failed: %s", task.id, exc)
            at.GetCurrentTime()
        await task.io.drain_output()
        async with task.start_lock:  # a Start in flight publishes /tasks/start first
            task.exit = Exit(status, at)
            task.status = Status.STOPPED
            task.timings["exit_reported"] = time.monotonic()
            task.exited.set()
            self.events.publish("/tasks/exit", events_pb2.TaskExit(
                container_id=task.id, id=task.id, pid=self.sandbox.vm_pid, exit_status=status,
                exited_at=at))
        self._log_phases(task)

    def _log_phases(self, task: Task) -> None:
        """One log line with the boot and container phases, relative to QEMU start."""
        phases = self.sandbox.phases()
        t0 = self.sandbox.timings.get("qemu_started")
        if t0 is not None:
            for name in ("create", "created", "started", "first_output", "exit_reported"):
                if name in task.timings:
                    phases["container_" + name] = task.timings[name] - t0
        text = " ".join(f"{k}={v:.3f}" for k, v in sorted(phases.items(), key=lambda kv: kv[1]))
        log.info("boot phases: %s (container %s)", text, task.id)

    # -- queries -----------------------------------------------------------------------------

    async def state(self, req: task_pb2.StateRequest) -> task_pb2.StateResponse:
        """Status, pid and stdio of the task."""
        task = self._get(req.id, req.exec_id)
        return task_pb2.StateResponse(
            id=task.id, bundle=task.bundle, pid=self.sandbox.vm_pid,
            status=task.status.name, stdin=task.stdin,
            stdout=task.stdout, stderr=task.stderr, terminal=task.terminal,
            exit_status=task.exit.status if task.exit else 0, exited_at=task.exited_at())

    async def wait(self, req: task_pb2.WaitRequest) -> task_pb2.WaitResponse:
        """Block until the exit is known; every caller gets the same stored result."""
        task = self._get(req.id, req.exec_id)
        await task.exited.wait()
        assert task.exit is not None
        return task_pb2.WaitResponse(exit_status=task.exit.status, exited_at=task.exit.at)

    async def pids(self, req: task_pb2.PidsRequest) -> task_pb2.PidsResponse:
        """Processes of the container (guest pids)."""
        task = self._get(req.id)
        agent = self.sandbox.agent
        pids = [] if agent is None or task.exit else await agent.list_pids(req.id)
        return task_pb2.PidsResponse(
            processes=[task_types_pb2.ProcessInfo(pid=p) for p in pids])

    async def connect(self, req: task_pb2.ConnectRequest) -> task_pb2.ConnectResponse:
        """The shim pid and the task pid (the VM's: the host process that runs the task)."""
        task_pid = self.sandbox.vm_pid if req.id in self.tasks else 0
        return task_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=task_pid,
                                        version="bulkhead")

    # -- control -----------------------------------------------------------------------------

    async def kill(self, req: task_pb2.KillRequest) -> empty_pb2.Empty:
        """Signal the process in the guest; an exited one is NotFound, as containerd expects."""
        task = self._get(req.id, req.exec_id)
        if task.exit is not None or self.sandbox.agent is None:
            raise TtrpcError(Code.NOT_FOUND, "process already finished: not found")
        await self.sandbox.agent.signal_process(req.id, "", req.signal, req.all)
        return empty_pb2.Empty()

    async def close_io(self, req: task_pb2.CloseIORequest) -> empty_pb2.Empty:
        """Close stdin once what the client wrote is forwarded."""
        task = self._get(req.id, req.exec_id)
        if req.stdin:
            task.io.close_stdin()
        return empty_pb2.Empty()

    async def delete(self, req: task_pb2.DeleteRequest) -> task_pb2.DeleteResponse:
        """Remove the container from the guest and the host; publishes /tasks/delete."""
        task = self._get(req.id, req.exec_id)
        if task.status == Status.RUNNING:
            raise TtrpcError(Code.FAILED_PRECONDITION,
                             f"container {req.id} is running: kill it before delete")
        agent = self.sandbox.agent
        if agent is not None:
            try:
                await agent.remove_container(req.id)
            except (TtrpcError, ConnectionError) as exc:
                log.warning("remove %s in guest: %s", req.id, exc)
        if task.exit is None:  # deleted before it ever ran
            task.exit = Exit(0, timestamp_pb2.Timestamp())
            task.exit.at.GetCurrentTime()
            task.exited.set()
        if task.waiter is not None:
            task.waiter.cancel()
        exit_ = task.exit
        await self._forget(task)
        self.events.publish("/tasks/delete", events_pb2.TaskDelete(
            container_id=req.id, pid=self.sandbox.vm_pid, exit_status=exit_.status,
            exited_at=exit_.at))
        return task_pb2.DeleteResponse(pid=self.sandbox.vm_pid, exit_status=exit_.status,
                                       exited_at=exit_.at)

    async def shutdown(self, req: task_pb2.ShutdownRequest) -> empty_pb2.Empty:
        """Exit only when no task remains; clean up everything first."""
        if self.tasks:
            return empty_pb2.Empty()
        await self._on_empty_shutdown()
        return empty_pb2.Empty()
