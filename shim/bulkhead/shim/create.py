"""Create: a container's plan, stdio, share, bundle and guest process, each step undone if a
later one fails; the rest of the task API is in task_service.py."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from bulkhead_wire.checks import check_id
from bulkhead_wire.proto import events_pb2, task_pb2
from bulkhead_wire.ttrpc import Code, TtrpcError

from bulkhead.agent.client import AgentClient
from bulkhead.config import Config
from bulkhead.sandbox import guest_bundle
from bulkhead.sandbox.guest_spec import SpecError, load_spec
from bulkhead.sandbox.oci_hooks import ContainerHooks, HookError
from bulkhead.sandbox.plan import SandboxPlan
from bulkhead.sandbox.rootfs import RootfsError
from bulkhead.sandbox.sandbox import Sandbox, SandboxError
from bulkhead.sandbox.volumes import VolumeError
from bulkhead.shim import sandbox_settings
from bulkhead.shim.events import EventSink
from bulkhead.shim.exits import ExitReporter
from bulkhead.shim.grouping import annotations_of, sandbox_key
from bulkhead.shim.task import Container, Process
from bulkhead.stdio.host import ProcessIO, StdioError

log = logging.getLogger(__name__)


def _first_output(proc: Process) -> None:
    """Boot-phase mark: when the first byte of output reached the host."""
    proc.timings.setdefault("first_output", time.monotonic())


async def open_io(sandbox: Sandbox, task_id: str, stdin: str, stdout: str, stderr: str,
                  terminal: bool) -> ProcessIO:
    """Host stdio ends of a process; a bad path or logger is InvalidArgument naming it."""
    try:
        return await ProcessIO.open(stdin, stdout, stderr, terminal, sandbox.new_stream,
                                    task_id, sandbox.namespace)
    except StdioError as exc:
        raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None


class CreateCall:
    """The Create RPC and its undo (`forget`, also what Delete does last)."""

    def __init__(self, sandbox: Sandbox, events: EventSink, tasks: dict[str, Container],
                 exits: ExitReporter, config: Config, config_error: str = "") -> None:
        self.sandbox = sandbox
        self.events = events
        self.tasks = tasks  # the task service's, shared
        self.exits = exits
        self.config = config  # the shim's; a Create's runtime options may name another
        self.config_error = config_error

    async def create(self, req: task_pb2.CreateTaskRequest) -> task_pb2.CreateTaskResponse:
        """Boot the VM if needed, share the bundle, open stdio and crun-create in the guest."""
        if req.id in self.tasks:
            raise TtrpcError(Code.ALREADY_EXISTS, f"container {req.id}: already exists")
        try:
            check_id("container", req.id)
        except ValueError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None
        if not os.path.isabs(req.bundle):
            raise TtrpcError(Code.INVALID_ARGUMENT,
                             f"bundle {req.bundle!r} of container {req.id}: not an absolute path")
        t_create = time.monotonic()
        try:
            spec = load_spec(req.bundle)
        except SpecError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None
        try:
            hooks = ContainerHooks.from_spec(req.id, req.bundle, spec)
        except HookError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"container {req.id}: {exc}") from None
        try:
            annotations = annotations_of(spec)
        except SpecError as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"container {req.id}: {exc}") from None
        plan = self._plan(req, spec, annotations)
        sb = self.sandbox
        io = await open_io(self.sandbox, req.id, req.stdin, req.stdout, req.stderr, req.terminal)
        init = Process(req.id, "", req.stdin, req.stdout, req.stderr, req.terminal, io)
        init.timings["create"] = t_create
        container = Container(req.id, req.bundle, init, hooks=hooks)
        self.tasks[req.id] = container
        sb.record_containers(list(self.tasks))
        try:
            await self._create_in_guest(container, req, spec, annotations, plan)
            await self._run_created_hooks(hooks)
        except BaseException:
            await self.forget(container)
            raise
        init.timings["created"] = time.monotonic()
        self.exits.watch(container, init)
        ev = events_pb2.TaskCreate(
            container_id=req.id, bundle=req.bundle, checkpoint=req.checkpoint,
            pid=sb.vm_pid, io=events_pb2.TaskIO(stdin=req.stdin, stdout=req.stdout,
                                                stderr=req.stderr, terminal=req.terminal))
        ev.rootfs.extend(req.rootfs)
        self.events.publish("/tasks/create", ev)
        return task_pb2.CreateTaskResponse(pid=sb.vm_pid)

    def _plan(self, req: task_pb2.CreateTaskRequest, spec: dict[str, Any],
              annotations: dict[str, str]) -> SandboxPlan | None:
        """The VM this Create would boot (None once it runs): from the shim's config, or the
        config file the request's runtime options name; a config the shim could not load is
        refused unless the request brings its own."""
        running = self.sandbox.agent is not None
        # A running VM has its config: a later request's file is not even read.
        own = None if running else sandbox_settings.runtime_config(req)
        if self.config_error and own is None:
            raise TtrpcError(Code.INVALID_ARGUMENT, self.config_error)
        if running:
            return None
        return sandbox_settings.sandbox_plan(self.sandbox.id, own or self.config, req.id, spec,
                                             annotations)

    async def _run_created_hooks(self, hooks: ContainerHooks) -> None:
        """prestart and createRuntime on the host, with the VM's pid (nerdctl's network)."""
        try:
            await hooks.created(self.sandbox.vm_pid)
        except HookError as exc:
            raise TtrpcError(Code.FAILED_PRECONDITION,
                             f"container {hooks.container_id}: {exc}") from None

    async def _create_in_guest(self, container: Container, req: task_pb2.CreateTaskRequest,
                               spec: dict[str, Any], annotations: dict[str, str],
                               plan: SandboxPlan | None) -> None:
        """The steps of Create that touch the VM; any failure is reported with its cause."""
        sb = self.sandbox
        try:
            agent = await self._running_agent(plan)
        except SandboxError as exc:
            raise TtrpcError(Code.UNAVAILABLE, f"sandbox {sb.id}: {exc}") from None
        assert sb.plan is not None
        try:
            cdir = sb.share.add_container(req.id)
            view = guest_bundle.prepare(
                req.id, spec, req.bundle, req.rootfs, cdir.fd, sb.guest_bundle(req.id),
                self._sandbox_guest_pid(req.id, annotations), vm_network=sb.plan.own_netns,
                staging=sb.staging_path(req.id),
                views=sb.image_view if sb.plan.config.rootfs == "layered" else None)
        except (RootfsError, VolumeError, OSError) as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"container {req.id}: {exc}") from None
        init = container.init
        init.timings["bundle_ready"] = time.monotonic()
        assert sb.link is not None
        init.io.start_output(sb.link, lambda n: _first_output(init))
        container.guest_pid = await agent.create_container(
            req.id, sb.guest_bundle(req.id), req.terminal, init.io.stream_ids,
            rootfs_lower=guest_bundle.guest_image_view(req.id, view))
        init.io.start_input(sb.link)

    async def _running_agent(self, plan: SandboxPlan | None) -> AgentClient:
        """The agent of the sandbox's VM, booted with plan if it does not run yet."""
        agent = self.sandbox.agent
        if agent is not None:
            return agent
        if plan is None:  # it ran when this Create was planned, and is gone since
            raise SandboxError(f"its VM is gone ({self.sandbox.dead or 'stopped'})")
        return await self.sandbox.ensure_running(plan)

    def _sandbox_guest_pid(self, task_id: str, annotations: dict[str, str]) -> int:
        """The guest pid of the pod's sandbox container, whose namespaces a container joins."""
        key, joins = sandbox_key(task_id, annotations)
        sandbox = self.tasks.get(key) if joins else None
        return sandbox.guest_pid if sandbox is not None else 0

    async def forget(self, container: Container) -> None:
        """Undo a container's host resources (and the VM if nothing else uses it)."""
        for proc in container.processes():
            if proc.waiter is not None:
                proc.waiter.cancel()
            await proc.io.close()
        self.tasks.pop(container.id, None)
        for what in self.sandbox.share.remove_container(container.id):
            log.warning("container %s: %s left in the share", container.id, what)
        self.sandbox.record_containers(list(self.tasks))
        if not self.tasks:
            self.exits.stop()
            await self.sandbox.stop_vm()
