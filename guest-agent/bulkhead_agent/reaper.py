"""Reaps every child of the agent and routes each exit status to whoever awaits that pid.

The agent is PID 1 (or a subreaper in development), so orphaned container inits become its
children; a single SIGCHLD handler with waitpid(-1) is the only place exits are collected.
Never wait for children any other way (asyncio subprocess, Popen.wait): that would race this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_UNCLAIMED = 1024


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How and when one process ended; `status` is shell-style (code, or 128 + signal)."""

    pid: int
    status: int
    exited_at_ns: int


def exit_status(wait_status: int) -> int:
    """Encode a raw wait status the way runc users expect: code, or 128+signal (SIGKILL: 137)."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    raise ValueError(f"wait status {wait_status:#x} is neither an exit nor a signal")


class Reaper:
    """Collects exits on SIGCHLD; exits nobody asked for yet are kept until someone does."""

    def __init__(self, max_unclaimed: int = MAX_UNCLAIMED) -> None:
        self._waiters: dict[int, asyncio.Future[ExitInfo]] = {}
        self._unclaimed: OrderedDict[int, ExitInfo] = OrderedDict()
        self._max_unclaimed = max_unclaimed
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start handling SIGCHLD on `loop` and collect anything that already exited."""
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()

    def uninstall(self) -> None:
        """Stop handling SIGCHLD (tests and shutdown)."""
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def watch(self, pid: int) -> asyncio.Future[ExitInfo]:
        """The future of pid's exit; every caller for the same pid gets the same future."""
        fut = self._waiters.get(pid)
        if fut is not None:
            return fut
        loop = self._loop or asyncio.get_running_loop()
        fut = loop.create_future()
        early = self._unclaimed.pop(pid, None)
        if early is not None:
            fut.set_result(early)
        else:
            self._waiters[pid] = fut
        return fut

    def forget(self, pid: int) -> None:
        """Drop interest in pid (e.g. its container was removed before it was reaped)."""
        fut = self._waiters.pop(pid, None)
        if fut is not None and not fut.done():
            fut.cancel()
        self._unclaimed.pop(pid, None)

    def reap(self) -> None:
        """Collect every exited child without blocking and deliver each status."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._deliver(ExitInfo(pid, exit_status(wait_status), time.time_ns()))

    def _deliver(self, info: ExitInfo) -> None:
        """Resolve the waiter of info.pid, or keep the status for a later watch()."""
        fut = self._waiters.pop(info.pid, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(info)
            return
        log.debug("reaped pid %d (status %d) before anyone watched it", info.pid, info.status)
        self._unclaimed[info.pid] = info
        while len(self._unclaimed) > self._max_unclaimed:
            self._unclaimed.popitem(last=False)
