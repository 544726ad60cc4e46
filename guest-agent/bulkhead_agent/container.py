"""Containers and their processes, driven through crun: create, start, exec, signal, remove.

A container's init process is started by `crun create` + `crun start`, an exec by
`crun exec --detach`; every exit reaches us through the Reaper (the agent is PID 1 or a
subreaper). cgroup-level operations (pause, update, stats) live in `control.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as signals
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from bulkhead_wire.checks import check_id, parse_process_spec, to_json

from bulkhead_agent import cgroup
from bulkhead_agent.crun import Crun
from bulkhead_agent.data_link import DataLink
from bulkhead_agent.errors import (
    AlreadyExists,
    CrunError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from bulkhead_agent.oom import OOMWatcher
from bulkhead_agent.process import INIT, Process
from bulkhead_agent.procio import ProcessIO, Streams
from bulkhead_agent.reaper import Reaper
from bulkhead_agent.rootfs_layer import LayerError, RootfsLayer

if TYPE_CHECKING:
    from bulkhead_wire.stdio.link import StreamLink

    from bulkhead_agent.console import ConsoleSocket

log = logging.getLogger(__name__)

REMOVE_DRAIN_TIMEOUT = 2.0  # seconds RemoveContainer lets output pumps finish before cutting them
T = TypeVar("T")


class Status:
    """Container status names as containerd knows them."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass
class Container:
    """A crun container known to the agent."""

    id: str
    bundle: str
    workdir: str
    init: Process
    cgroup_path: str | None = None
    paused: bool = False
    execs: dict[str, Process] = field(default_factory=dict)
    layer: RootfsLayer | None = None  # the root assembled in the guest, when the shim asked

    @property
    def status(self) -> str:
        """Derived from the init process, so a racing reap can never be overwritten."""
        if self.init.exit is not None:
            return Status.STOPPED
        if not self.init.started:
            return Status.CREATED
        return Status.PAUSED if self.paused else Status.RUNNING

    def process(self, exec_id: str) -> Process:
        """The init ("") or a known exec process."""
        if exec_id == INIT:
            return self.init
        proc = self.execs.get(exec_id)
        if proc is None:
            raise NotFound(f"process {exec_id} of container {self.id} not found")
        return proc

    def processes(self) -> list[Process]:
        """The init and every exec."""
        return [self.init, *self.execs.values()]


def _checked(check: Callable[[], T]) -> T:
    """Run a shared wire check; its ValueError is the agent's InvalidArgument."""
    try:
        return check()
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


class Supervisor:
    """All containers of this VM; one instance per agent."""

    def __init__(self, crun: Crun, reaper: Reaper, state_dir: str,
                 cgroup_root: str = cgroup.ROOT) -> None:
        self.crun = crun
        self.reaper = reaper
        self.state_dir = state_dir
        self.cgroup_root = cgroup_root
        self.data = DataLink()  # the current host connection's data channel
        self.oom = OOMWatcher(cgroup_root)
        self._containers: dict[str, Container] = {}
        self._busy: set[str] = set()

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
                     streams: Streams, rootfs_lower: str = "") -> int:
        """`crun create` with fresh stdio; returns the init pid (stopped before exec).
        rootfs_lower: the image view to assemble the root on (rootfs_layer), "" for none."""
        _checked(lambda: check_id("container", container_id))
        if container_id in self._containers or container_id in self._busy:
            raise AlreadyExists(f"container {container_id} already exists")
        if not os.path.isfile(os.path.join(bundle, "config.json")):
            raise FailedPrecondition(f"bundle {bundle} of container {container_id}: "
                                     "config.json not found")
        link = await self.data.open()
        self._busy.add(container_id)
        try:
            ctr = await self._create(container_id, bundle, terminal, streams, link,
                                     rootfs_lower)
        finally:
            self._busy.discard(container_id)
        self._containers[container_id] = ctr
        if ctr.cgroup_path:
            self.oom.watch(container_id, ctr.cgroup_path)
        log.info("container %s created, init pid %d", container_id, ctr.init.pid)
        return ctr.init.pid

    async def _create(self, container_id: str, bundle: str, terminal: bool, streams: Streams,
                      link: StreamLink, rootfs_lower: str) -> Container:
        """Run crun create; on any failure leave nothing behind (crun state, fds, mounts)."""
        workdir = os.path.join(self.state_dir, "containers", container_id)
        os.makedirs(workdir, exist_ok=True)
        pid_file = os.path.join(workdir, "init.pid")
        layer = None
        try:
            if rootfs_lower:
                layer = RootfsLayer.assemble(container_id, rootfs_lower, bundle)
            io = ProcessIO.open(streams, terminal)
        except BaseException as exc:
            if layer is not None:
                layer.unmount()
            _remove_tree(workdir)
            if isinstance(exc, LayerError):
                raise FailedPrecondition(str(exc)) from None
            raise
        try:
            await self._run_with_stdio(io, workdir, f"container {container_id}",
                                       ["create", "--bundle", bundle, "--pid-file", pid_file],
                                       container_id)
            pid = _read_pid(pid_file, container_id)
        except BaseException:
            io.close()
            await self._crun_delete(container_id)
            if layer is not None:
                layer.unmount()
            _remove_tree(workdir)
            raise
        io.start(link)
        init = Process(INIT, io, terminal=terminal, pid=pid)
        ctr = Container(container_id, bundle, workdir, init,
                        cgroup_path=cgroup.container_cgroup_of(pid), layer=layer)
        init.track(self.reaper.watch(pid), lambda: self._init_exited(ctr))
        if layer is not None:
            layer.start_writeback()
        return ctr

    async def _run_with_stdio(self, io: ProcessIO, workdir: str, what: str,
                              args: Sequence[str], container_id: str) -> None:
        """Run a crun create/exec that gets the process's stdio: pipes, or a console socket."""
        console: ConsoleSocket | None = None
        argv = list(args)
        if io.console_wanted:
            from bulkhead_agent.console import ConsoleSocket  # terminals only: keep boot lean

            console = ConsoleSocket(os.path.join(workdir, "console.sock"))
            console.start()
            argv += ["--console-socket", console.path]
        try:
            try:
                stdin, stdout, stderr = io.child
                await self.crun.run([*argv, container_id], stdin=stdin, stdout=stdout,
                                    stderr=stderr)
            finally:
                io.close_child_ends()
            if console is not None:
                io.attach_console(await console.receive(what))
        finally:
            if console is not None:
                console.close()

    async def start(self, container_id: str, exec_id: str) -> int:
        """`crun start` for the init, `crun exec --detach` for an exec; returns the pid."""
        ctr = self.get(container_id)
        if exec_id != INIT:
            return await self._start_exec(ctr, ctr.process(exec_id))
        status = ctr.status
        if status != Status.CREATED:
            raise FailedPrecondition(f"container {container_id} is {status}, not created")
        ctr.init.started = True
        try:
            await self.crun.run(["start", container_id])
        except BaseException:
            ctr.init.started = False
            raise
        log.info("container %s started", container_id)
        return ctr.init.pid

    # -- exec ----------------------------------------------------------------------------

    async def exec(self, container_id: str, exec_id: str, terminal: bool, streams: Streams,
                   process: bytes) -> None:
        """Register an exec process with its stdio; `start` runs it."""
        _checked(lambda: check_id("exec", exec_id))
        ctr = self.get(container_id)
        self._require_running(ctr, f"exec {exec_id} in")
        if exec_id in ctr.execs:
            raise AlreadyExists(f"exec {exec_id} already exists in container {container_id}")
        spec = _checked(lambda: parse_process_spec(process,
                                                   f"exec {exec_id} of container {container_id}"))
        spec["terminal"] = terminal
        spec_path = os.path.join(ctr.workdir, f"exec-{exec_id}.json")
        with open(spec_path, "w") as f:
            f.write(to_json(spec))
        try:
            io = ProcessIO.open(streams, terminal)
        except BaseException:
            os.unlink(spec_path)
            raise
        ctr.execs[exec_id] = Process(exec_id, io, terminal=terminal, spec_path=spec_path)

    async def _start_exec(self, ctr: Container, proc: Process) -> int:
        """crun exec --detach: the process is re-parented to us and reaped by the Reaper."""
        if proc.started:
            raise FailedPrecondition(f"{proc.name} of container {ctr.id} was already started")
        self._require_running(ctr, f"start {proc.name} in")
        link = await self.data.open()
        pid_file = os.path.join(ctr.workdir, f"exec-{proc.exec_id}.pid")
        proc.started = True
        try:
            await self._run_with_stdio(
                proc.io, ctr.workdir, f"{proc.name} of container {ctr.id}",
                ["exec", "--detach", "--pid-file", pid_file, "--process", proc.spec_path],
                ctr.id)
            proc.pid = _read_pid(pid_file, ctr.id)
        except BaseException:
            proc.started = False
            proc.io.close()
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pid_file)
        proc.io.start(link)
        proc.track(self.reaper.watch(proc.pid), lambda: self._exec_exited(ctr, proc))
        log.info("container %s: %s started, pid %d", ctr.id, proc.name, proc.pid)
        return proc.pid

    async def delete_process(self, container_id: str, exec_id: str) -> None:
        """Forget an exec that exited (or never started) and release its stdio."""
        ctr = self.get(container_id)
        if exec_id == INIT:
            raise InvalidArgument("the init process is removed with its container")
        proc = ctr.process(exec_id)
        if proc.running:
            raise FailedPrecondition(f"{proc.name} of container {container_id} is running")
        ctr.execs.pop(exec_id, None)
        proc.io.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(proc.spec_path)

    # -- wait / signal / stdin / pids ----------------------------------------------------

    async def wait(self, container_id: str, exec_id: str) -> Process:
        """The process once it exited and all its output was sent; repeated calls agree. An
        init's exit waits for the last write-back: its writes are in the snapshot by then."""
        ctr = self.get(container_id)
        proc = ctr.process(exec_id)
        await proc.wait()
        if exec_id == INIT and ctr.layer is not None:
            await ctr.layer.finish()
        return proc

    async def signal(self, container_id: str, exec_id: str, signum: int, all_: bool) -> None:
        """Deliver a signal to a process (or every process of the container with all_)."""
        ctr = self.get(container_id)
        proc = ctr.process(exec_id)
        if not 0 <= signum < signals.NSIG:
            raise InvalidArgument(f"invalid signal {signum}")
        if not proc.pid:  # an exec before its start; a created init already has its pid
            raise FailedPrecondition(f"{proc.name} of container {container_id} is not started")
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

    def resize(self, container_id: str, exec_id: str, width: int, height: int) -> None:
        """Window size of a terminal process."""
        proc = self.get(container_id).process(exec_id)
        proc.io.resize(width, height)

    def list_pids(self, container_id: str) -> list[tuple[int, str]]:
        """(pid, exec id) of every process in the container's cgroup; exec id "" if not an exec."""
        ctr = self.get(container_id)
        execs = {p.pid: p.exec_id for p in ctr.execs.values() if p.running}
        path = ctr.cgroup_path  # (only ever a cgroup of the container's own)
        if path:
            try:
                pids = sorted(cgroup.pids_in(path, self.cgroup_root))
                return [(pid, execs.get(pid, "")) for pid in pids]
            except OSError as exc:
                log.debug("container %s: cgroup %s unreadable: %s", ctr.id, path, exc)
        return [] if ctr.init.exit is not None else [(ctr.init.pid, "")]

    # -- exits ---------------------------------------------------------------------------

    def _init_exited(self, ctr: Container) -> None:
        """When the init dies, every other process of the container goes too (as under runc).

        Runs the moment it is reaped, before its WaitProcess answer: the OOM count read here
        lets the shim publish /tasks/oom before the exit.
        """
        ctr.init.oom_kills = self.oom.check(ctr.id)
        if ctr.cgroup_path and any(p.running for p in ctr.execs.values()):
            cgroup.kill_all(ctr.cgroup_path, self.cgroup_root)

    def _exec_exited(self, ctr: Container, proc: Process) -> None:
        """An exec killed by the OOM killer is reported the same way as the init."""
        proc.oom_kills = self.oom.check(ctr.id)

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
            if ctr.layer is not None:
                await ctr.layer.finish()
                ctr.layer.unmount()
        finally:
            self._busy.discard(container_id)
        self._containers.pop(container_id, None)
        self.oom.unwatch(container_id)
        for proc in ctr.processes():
            proc.io.close()
            if proc.pid and proc.exit is None:
                self.reaper.forget(proc.pid)
        _remove_tree(ctr.workdir)
        log.info("container %s removed", container_id)

    async def _delete(self, ctr: Container) -> None:
        """`crun delete -f`; a failure only matters while the init is still alive."""
        if ctr.paused:  # a frozen init cannot die; thaw first so delete -f can reap it
            await self.crun.run(["resume", ctr.id], check=False)
            ctr.paused = False
        result = await self.crun.run(["delete", "-f", ctr.id], check=False)
        if result.status != 0:
            if ctr.init.exit is None:
                raise CrunError("delete", result.status, result.text)
            log.warning("container %s: crun delete failed after exit: %s", ctr.id, result.text)

    async def _settle(self, ctr: Container) -> None:
        """Give the killed processes' output a moment to drain before the pumps are cut."""
        pending = [p.finished for p in ctr.processes()
                   if p.finished is not None and not p.finished.done()]
        if pending:
            await asyncio.wait(pending, timeout=REMOVE_DRAIN_TIMEOUT)

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _require_running(ctr: Container, action: str) -> None:
        """Execs need a running, unfrozen container, as under runc."""
        status = ctr.status
        if status != Status.RUNNING:
            raise FailedPrecondition(f"cannot {action} container {ctr.id}: it is {status}")

    async def _crun_delete(self, container_id: str) -> None:
        """Best-effort `crun delete -f` after a failed create."""
        try:
            await self.crun.run(["delete", "-f", container_id], check=False)
        except Exception as exc:
            log.warning("cleanup of container %s: %s", container_id, exc)


def _read_pid(pid_file: str, container_id: str) -> int:
    """The pid crun wrote; a missing or garbled file is crun's failure, named as such."""
    try:
        with open(pid_file) as f:
            text = f.read().strip()
        return int(text)
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"container {container_id}: crun left no usable pid "
                                 f"file {pid_file}: {exc}") from None


def _remove_tree(path: str) -> None:
    """Remove a container's small state directory (flat: pid files, exec specs, sockets)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        os.rmdir(path)
