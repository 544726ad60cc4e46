"""Container and process state, and their lifecycle driven through crun.

A container's init process is started by `crun create` + `crun start`; its exit reaches us
through the Reaper (the agent is PID 1 or a subreaper). A process counts as finished for
WaitProcess only once it was reaped AND all its output went out on the data channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal as signals
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bulkhead_agent import cgroup
from bulkhead_agent.crun import Crun
from bulkhead_agent.errors import (
    AlreadyExists,
    CrunError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from bulkhead_agent.procio import ProcessIO, Streams
from bulkhead_agent.reaper import ExitInfo, Reaper

if TYPE_CHECKING:
    from bulkhead.stdio.channel import DataChannel

log = logging.getLogger(__name__)

INIT = ""  # exec id of a container's init process
REMOVE_DRAIN_TIMEOUT = 2.0  # seconds RemoveContainer lets output pumps finish before cutting them


class Status(enum.Enum):
    """Container status as containerd knows it."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass
class Process:
    """One process of a container (the init, later exec'd ones): its pid, stdio and exit."""

    exec_id: str
    io: ProcessIO
    pid: int = 0
    started: bool = False
    exited: asyncio.Future[ExitInfo] | None = None
    finished: asyncio.Task[ExitInfo] | None = None

    @property
    def exit(self) -> ExitInfo | None:
        """The reaped exit, visible the moment the reaper resolved it."""
        if self.exited is None or not self.exited.done() or self.exited.cancelled():
            return None
        return self.exited.result()

    def track(self, exited: asyncio.Future[ExitInfo]) -> None:
        """Follow the reaper's future for our pid; `finished` also waits for the output."""
        self.exited = exited
        self.finished = asyncio.get_running_loop().create_task(self._finish(exited))

    async def _finish(self, exited: asyncio.Future[ExitInfo]) -> ExitInfo:
        """The exit, delivered only after the stdout/stderr pumps sent everything and EOF."""
        info = await exited
        await self.io.wait_output()
        return info

    async def wait(self) -> ExitInfo:
        """Shared by every WaitProcess caller; cancelling one caller never cancels the others."""
        if self.finished is None:
            raise FailedPrecondition(f"process {self.exec_id or 'init'} has no pid yet")
        try:
            return await asyncio.shield(self.finished)
        except asyncio.CancelledError:
            if self.finished.cancelled():  # removed before it ever exited
                raise NotFound(f"process {self.exec_id or 'init'} was removed before it "
                               "exited") from None
            raise


@dataclass
class Container:
    """A crun container known to the agent."""

    id: str
    bundle: str
    init: Process
    cgroup_path: str | None = None
    execs: dict[str, Process] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        """Derived from the init process, so a racing reap can never be overwritten."""
        if self.init.exit is not None:
            return Status.STOPPED
        return Status.RUNNING if self.init.started else Status.CREATED

    def process(self, exec_id: str) -> Process:
        """The init ("") or a known exec process."""
        if exec_id == INIT:
            return self.init
        proc = self.execs.get(exec_id)
        if proc is None:
            raise NotFound(f"process {exec_id} of container {self.id} not found")
        return proc


def check_id(container_id: str) -> None:
    """Refuse ids that crun would refuse or that could escape the state directories."""
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id {container_id!r}")


class Supervisor:
    """All containers of this VM; one instance per agent."""

    def __init__(self, crun: Crun, reaper: Reaper, state_dir: str,
                 cgroup_root: str = cgroup.ROOT) -> None:
        self.crun = crun
        self.reaper = reaper
        self.state_dir = state_dir
        self.cgroup_root = cgroup_root
        self.channel: DataChannel | None = None
        self._containers: dict[str, Container] = {}
        self._busy: set[str] = set()

    def attach_channel(self, channel: DataChannel | None) -> None:
        """Use this data channel for the stdio of processes started from now on."""
        self.channel = channel

    def get(self, container_id: str) -> Container:
        """A known container, or NotFound naming it."""
        ctr = self._containers.get(container_id)
        if ctr is None:
            raise NotFound(f"container {container_id} not found")
        return ctr

    def containers(self) -> list[Container]:
        """Snapshot of the known containers."""
        return list(self._containers.values())

    # -- create / start ------------------------------------------------------------------

    async def create(self, container_id: str, bundle: str, terminal: bool,
                     streams: Streams) -> int:
        """`crun create` with fresh stdio pipes; returns the init pid (stopped before exec)."""
        check_id(container_id)
        if terminal:
            raise Unimplemented("terminal not supported yet")
        if container_id in self._containers or container_id in self._busy:
            raise AlreadyExists(f"container {container_id} already exists")
        if not os.path.isfile(os.path.join(bundle, "config.json")):
            raise FailedPrecondition(f"bundle {bundle} of container {container_id}: "
                                     "config.json not found")
        channel = self._require_channel()
        self._busy.add(container_id)
        try:
            ctr = await self._create(container_id, bundle, streams, channel)
        finally:
            self._busy.discard(container_id)
        self._containers[container_id] = ctr
        log.info("container %s created, init pid %d", container_id, ctr.init.pid)
        return ctr.init.pid

    async def _create(self, container_id: str, bundle: str, streams: Streams,
                      channel: DataChannel) -> Container:
        """Run crun create; on any failure leave nothing behind (crun state, fds, files)."""
        workdir = os.path.join(self.state_dir, "containers", container_id)
        os.makedirs(workdir, exist_ok=True)
        pid_file = os.path.join(workdir, "init.pid")
        io = ProcessIO.open(streams)
        try:
            try:
                stdin, stdout, stderr = io.child
                await self.crun.run(["create", "--bundle", bundle, "--pid-file", pid_file,
                                     container_id], stdin=stdin, stdout=stdout, stderr=stderr)
            finally:
                io.close_child_ends()
            pid = _read_pid(pid_file, container_id)
        except BaseException:
            io.close()
            await self._crun_delete(container_id)
            _remove_tree(workdir)
            raise
        io.start(channel)
        init = Process(INIT, io, pid=pid)
        init.track(self.reaper.watch(pid))
        return Container(container_id, bundle, init, cgroup_path=cgroup.cgroup_of(pid))

    async def start(self, container_id: str, exec_id: str) -> int:
        """`crun start` for the init; exec processes come in a later version."""
        ctr = self.get(container_id)
        if exec_id != INIT:
            raise Unimplemented("exec processes are not supported yet")
        status = ctr.status
        if status is not Status.CREATED:
            raise FailedPrecondition(f"container {container_id} is {status.value}, not created")
        ctr.init.started = True
        try:
            await self.crun.run(["start", container_id])
        except BaseException:
            ctr.init.started = False
            raise
        log.info("container %s started", container_id)
        return ctr.init.pid

    # -- wait / signal / stdin / pids ----------------------------------------------------

    async def wait(self, container_id: str, exec_id: str) -> ExitInfo:
        """Exit of a process, after all its output was sent; repeated calls agree."""
        return await self.get(container_id).process(exec_id).wait()

    async def signal(self, container_id: str, exec_id: str, signum: int, all_: bool) -> None:
        """Deliver a signal to a process (or every process of the container with all_)."""
        ctr = self.get(container_id)
        proc = ctr.process(exec_id)
        if not 0 <= signum < signals.NSIG:
            raise InvalidArgument(f"invalid signal {signum}")
        if proc.exit is not None:
            raise NotFound("process already finished")
        if all_ and exec_id == INIT:
            await self._crun_kill_all(ctr, signum)
            return
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            raise NotFound("process already finished") from None

    async def _crun_kill_all(self, ctr: Container, signum: int) -> None:
        """`crun kill --all`; a container that finished meanwhile is NotFound like os.kill."""
        try:
            await self.crun.run(["kill", "--all", ctr.id, str(signum)])
        except CrunError:
            if ctr.init.exit is not None:
                raise NotFound("process already finished") from None
            raise

    async def close_stdin(self, container_id: str, exec_id: str) -> None:
        """Return once the stdin stream's EOF was passed on and the pipe closed."""
        await self.get(container_id).process(exec_id).io.close_stdin()

    def list_pids(self, container_id: str) -> list[int]:
        """Pids in the container's cgroup; just the init pid if the cgroup can't be read."""
        ctr = self.get(container_id)
        path = ctr.cgroup_path
        if path and path != "/" and path != cgroup.cgroup_of(os.getpid()):
            try:
                return sorted(cgroup.pids_in(path, self.cgroup_root))
            except OSError as exc:
                log.debug("container %s: cgroup %s unreadable: %s", ctr.id, path, exc)
        return [] if ctr.init.exit is not None else [ctr.init.pid]

    # -- removal -------------------------------------------------------------------------

    async def remove(self, container_id: str) -> None:
        """`crun delete -f`, then drop every fd, pump and file of the container."""
        ctr = self.get(container_id)
        if container_id in self._busy:
            raise FailedPrecondition(f"container {container_id} is busy")
        self._busy.add(container_id)
        try:
            await self._delete(ctr)
            await self._settle(ctr)
        finally:
            self._busy.discard(container_id)
        self._containers.pop(container_id, None)
        for proc in (ctr.init, *ctr.execs.values()):
            proc.io.close()
            if proc.exit is None:
                self.reaper.forget(proc.pid)
        _remove_tree(os.path.join(self.state_dir, "containers", container_id))
        log.info("container %s removed", container_id)

    async def _delete(self, ctr: Container) -> None:
        """`crun delete -f`; a failure only matters while the init is still alive."""
        result = await self.crun.run(["delete", "-f", ctr.id], check=False)
        if result.status != 0:
            if ctr.init.exit is None:
                raise CrunError("delete", result.status, result.text)
            log.warning("container %s: crun delete failed after exit: %s", ctr.id, result.text)

    async def _settle(self, ctr: Container) -> None:
        """Give the killed init's output a moment to drain before the pumps are cut."""
        finished = ctr.init.finished
        if finished is None or finished.done():
            return
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(finished), REMOVE_DRAIN_TIMEOUT)

    async def kill_all(self) -> None:
        """SIGKILL every container's processes (Shutdown); errors are only logged."""
        for ctr in self.containers():
            if ctr.init.exit is not None:
                continue
            try:
                await self.crun.run(["kill", "--all", ctr.id, str(int(signals.SIGKILL))])
            except Exception as exc:
                log.warning("shutdown: killing container %s: %s", ctr.id, exc)
                with contextlib.suppress(OSError):
                    os.kill(ctr.init.pid, signals.SIGKILL)

    # -- helpers -------------------------------------------------------------------------

    def _require_channel(self) -> DataChannel:
        """The data channel, which every container's stdio goes through."""
        if self.channel is None:
            raise FailedPrecondition("data channel is not connected")
        return self.channel

    async def _crun_delete(self, container_id: str) -> None:
        """Best-effort `crun delete -f` after a failed create."""
        try:
            await self.crun.run(["delete", "-f", container_id], check=False)
        except Exception as exc:
            log.warning("cleanup of container %s: %s", container_id, exc)


def _read_pid(pid_file: str, container_id: str) -> int:
    """The init pid crun wrote; a missing or garbled file is crun's failure, named as such."""
    try:
        with open(pid_file) as f:
            text = f.read().strip()
        return int(text)
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"container {container_id}: crun create left no usable pid "
                                 f"file {pid_file}: {exc}") from None


def _remove_tree(path: str) -> None:
    """Remove a container's small state directory (flat: pid file only)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        os.rmdir(path)

