"""cgroup-level control of a running container: pause/resume (freezer), update, stats."""

from __future__ import annotations

import json
import logging
import os

from bulkhead_wire.proto import cgroups_v2_pb2

from bulkhead_agent import cgroup_stats
from bulkhead_agent.container import Container, Status, Supervisor
from bulkhead_agent.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)


class ContainerControl:
    """Operations on a container as a whole, through crun and its cgroup."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def _running(self, container_id: str, action: str) -> Container:
        """A container whose init runs (paused or not)."""
        ctr = self.supervisor.get(container_id)
        if ctr.status in (Status.CREATED, Status.STOPPED):
            raise FailedPrecondition(f"cannot {action} container {container_id}: "
                                     f"it is {ctr.status}")
        return ctr

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the container (cgroup v2 freezer, via crun pause)."""
        ctr = self._running(container_id, "pause")
        if ctr.paused:
            raise FailedPrecondition(f"container {container_id} is already paused")
        await self.supervisor.crun.run(["pause", container_id])
        ctr.paused = True
        log.info("container %s paused", container_id)

    async def resume(self, container_id: str) -> None:
        """Thaw a paused container."""
        ctr = self._running(container_id, "resume")
        if not ctr.paused:
            raise FailedPrecondition(f"container {container_id} is not paused")
        await self.supervisor.crun.run(["resume", container_id])
        ctr.paused = False
        log.info("container %s resumed", container_id)

    async def update(self, container_id: str, resources: bytes) -> None:
        """Apply OCI LinuxResources (memory, cpu, pids, ...) with `crun update --resources`."""
        ctr = self._running(container_id, "update")
        try:
            parsed = json.loads(resources)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"resources of container {container_id} are not valid "
                                  f"JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidArgument(f"resources of container {container_id} must be a JSON "
                                  "object (OCI LinuxResources)")
        path = os.path.join(ctr.workdir, "resources.json")
        with open(path, "w") as f:
            json.dump(parsed, f)
        try:
            await self.supervisor.crun.run(["update", "--resources", path, container_id])
        finally:
            os.unlink(path)
        log.info("container %s updated: %s", container_id, parsed)

    def stats(self, container_id: str) -> cgroups_v2_pb2.Metrics:
        """cgroup v2 figures of the container (also after its init exited, until removal)."""
        ctr = self.supervisor.get(container_id)
        if not ctr.cgroup_path:
            raise NotFound(f"container {container_id} has no cgroup")
        try:
            return cgroup_stats.metrics(ctr.cgroup_path, self.supervisor.cgroup_root)
        except OSError as exc:
            raise NotFound(f"cgroup {ctr.cgroup_path} of container {container_id}: "
                           f"{exc.strerror or exc}") from None
