"""One process of a container (its init, or an exec): pid, stdio, and an exit that waits for output.

A process counts as finished for WaitProcess only once it was reaped AND all its output went out
on the data channel; every WaitProcess caller shares that one result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bulkhead_agent.errors import FailedPrecondition, NotFound
from bulkhead_agent.procio import ProcessIO
from bulkhead_agent.reaper import ExitInfo

log = logging.getLogger(__name__)

INIT = ""  # exec id of a container's init process


@dataclass
class Process:
    """The init or an exec: its stdio, its pid once running, and its exit once reaped."""

    exec_id: str
    io: ProcessIO
    terminal: bool = False
    spec_path: str = ""  # exec only: the OCI process JSON crun exec reads
    pid: int = 0
    started: bool = False
    exited: asyncio.Future[ExitInfo] | None = None
    finished: asyncio.Task[ExitInfo] | None = None
    oom_kills: int = 0  # the container cgroup's oom_kill count when this process was reaped
    output_marks: dict[int, int] | None = None  # stream -> its length at the exit

    @property
    def name(self) -> str:
        """How messages call it."""
        return f"exec {self.exec_id}" if self.exec_id else "init"

    @property
    def exit(self) -> ExitInfo | None:
        """The reaped exit, visible the moment the reaper resolved it."""
        if self.exited is None or not self.exited.done() or self.exited.cancelled():
            return None
        return self.exited.result()

    @property
    def running(self) -> bool:
        """Started and not reaped yet."""
        return self.started and self.pid > 0 and self.exit is None

    def track(self, exited: asyncio.Future[ExitInfo],
              on_exit: Callable[[], None] | None = None) -> None:
        """Follow the reaper's future for our pid; `finished` also waits for the output.

        on_exit runs the moment the process is reaped, before any waiter hears of it.
        """
        self.exited = exited
        self.finished = asyncio.get_running_loop().create_task(self._finish(exited, on_exit))

    async def _finish(self, exited: asyncio.Future[ExitInfo],
                      on_exit: Callable[[], None] | None) -> ExitInfo:
        """The exit, delivered only after the process's own output went out on the channel."""
        info = await exited
        if on_exit is not None:
            try:
                on_exit()
            except Exception:  # the exit itself must still be reported
                log.exception("after the exit of %s", self.name)
        self.output_marks = self.io.exit_marks()
        await self.io.wait_output(self.output_marks)
        return info

    async def wait(self) -> ExitInfo:
        """Shared by every WaitProcess caller; cancelling one caller never cancels the others."""
        if self.finished is None:
            raise FailedPrecondition(f"process {self.name} has not been started")
        try:
            return await asyncio.shield(self.finished)
        except asyncio.CancelledError:
            if self.finished.cancelled():  # removed before it ever exited
                raise NotFound(f"process {self.name} was removed before it exited") from None
            raise
