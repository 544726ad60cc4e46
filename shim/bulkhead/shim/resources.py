"""Task RPCs on a container as a whole: Pause, Resume, Update, Stats (and Checkpoint's refusal)."""

from __future__ import annotations

import json
from collections.abc import Callable

from bulkhead_wire.proto import events_pb2, task_pb2
from bulkhead_wire.ttrpc import Code, TtrpcError
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from bulkhead.agent.client import AgentClient
from bulkhead.sandbox.sandbox import Sandbox
from bulkhead.shim.events import EventSink
from bulkhead.shim.task import Container, Status

RESOURCES_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
METRICS_TYPE = "io.containerd.cgroups.v2.Metrics"


class ResourceCalls:
    """Handlers that act on the container's guest cgroup through the agent."""

    def __init__(self, sandbox: Sandbox, events: EventSink,
                 lookup: Callable[[str], Container]) -> None:
        self.sandbox = sandbox
        self.events = events
        self.lookup = lookup

    def _running(self, task_id: str, action: str) -> tuple[Container, AgentClient]:
        """A container whose init runs in a live VM, or FailedPrecondition saying why not."""
        container = self.lookup(task_id)
        agent = self.sandbox.agent
        if container.init.status != Status.RUNNING or agent is None:
            state = container.status.name.lower()
            raise TtrpcError(Code.FAILED_PRECONDITION,
                             f"cannot {action} container {task_id}: it is {state}")
        return container, agent

    async def pause(self, req: task_pb2.PauseRequest) -> empty_pb2.Empty:
        """Freeze every process of the container (guest cgroup freezer)."""
        await self._set_frozen(req.id, True)
        return empty_pb2.Empty()

    async def resume(self, req: task_pb2.ResumeRequest) -> empty_pb2.Empty:
        """Thaw a paused container."""
        await self._set_frozen(req.id, False)
        return empty_pb2.Empty()

    async def _set_frozen(self, task_id: str, frozen: bool) -> None:
        """Pause or resume through the agent, then publish /tasks/paused or /tasks/resumed."""
        action = "pause" if frozen else "resume"
        container, agent = self._running(task_id, action)
        if container.paused == frozen:
            state = "already paused" if frozen else "not paused"
            raise TtrpcError(Code.FAILED_PRECONDITION, f"container {task_id} is {state}")
        if frozen:
            await agent.pause(task_id)
            event: Message = events_pb2.TaskPaused(container_id=task_id)
        else:
            await agent.resume(task_id)
            event = events_pb2.TaskResumed(container_id=task_id)
        container.paused = frozen
        self.events.publish(f"/tasks/{action}d", event)

    async def update(self, req: task_pb2.UpdateTaskRequest) -> empty_pb2.Empty:
        """New limits (OCI LinuxResources JSON) for the container's guest cgroup."""
        _, agent = self._running(req.id, "update")
        if req.resources.type_url and req.resources.type_url != RESOURCES_TYPE:
            raise TtrpcError(Code.INVALID_ARGUMENT, f"update of {req.id}: resources type "
                                                    f"{req.resources.type_url!r} is not "
                                                    "OCI LinuxResources")
        try:
            parsed = json.loads(req.resources.value or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise TtrpcError(Code.INVALID_ARGUMENT,
                             f"update of {req.id}: resources are not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise TtrpcError(Code.INVALID_ARGUMENT,
                             f"update of {req.id}: resources must be a JSON object")
        await agent.update(req.id, json.dumps(parsed).encode())
        return empty_pb2.Empty()

    async def stats(self, req: task_pb2.StatsRequest) -> task_pb2.StatsResponse:
        """cgroup v2 metrics from the guest; NotFound once there is no cgroup to read."""
        container = self.lookup(req.id)
        agent = self.sandbox.agent
        if agent is None or container.init.exit is not None:
            raise TtrpcError(Code.NOT_FOUND, f"container {req.id} is not running: no cgroup "
                                             "to read: not found")
        metrics = await agent.stats(req.id)
        return task_pb2.StatsResponse(stats=any_pb2.Any(type_url=METRICS_TYPE, value=metrics))

    async def checkpoint(self, req: task_pb2.CheckpointTaskRequest) -> empty_pb2.Empty:
        """CRIU inside a microVM is not supported; say so plainly."""
        self.lookup(req.id)
        raise TtrpcError(Code.UNIMPLEMENTED, f"checkpoint of container {req.id}: bulkhead "
                                             "cannot checkpoint a container inside its VM "
                                             "(no CRIU in the guest)")
