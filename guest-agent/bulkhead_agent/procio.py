"""The stdio pipes of one container process and the pumps that join them to the data channel.

Pipe ends handed to crun (and so to the container) stay blocking; the ends the agent keeps are
non-blocking and closed by the pump that owns them, once it has finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from bulkhead.stdio.channel import DataChannel
from bulkhead.stdio.pump import pump_fd_to_stream, pump_stream_to_fd

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Streams:
    """Data-channel stream ids of a process; 0 means the stream is not wanted (/dev/null)."""

    stdin: int = 0
    stdout: int = 0
    stderr: int = 0


@dataclass
class ProcessIO:
    """Pipes of one process: `child` ends go to crun, the agent keeps the other ends."""

    streams: Streams
    child: list[int | None] = field(default_factory=lambda: [None, None, None])
    stdin_fd: int | None = None
    stdout_fd: int | None = None
    stderr_fd: int | None = None
    input_pump: asyncio.Task[None] | None = None
    output_pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def open(cls, streams: Streams) -> ProcessIO:
        """Create a pipe for every wanted stream."""
        io = cls(streams)
        try:
            if streams.stdin:
                io.child[0], io.stdin_fd = _pipe(keep_write=True)
            if streams.stdout:
                io.stdout_fd, io.child[1] = _pipe(keep_write=False)
            if streams.stderr:
                io.stderr_fd, io.child[2] = _pipe(keep_write=False)
        except BaseException:
            io.close()
            raise
        return io

    def close_child_ends(self) -> None:
        """Drop the container's ends once crun has passed them on, so EOF can be seen."""
        for i, fd in enumerate(self.child):
            if fd is not None:
                os.close(fd)
                self.child[i] = None

    def start(self, channel: DataChannel) -> None:
        """Start copying: stdout/stderr to their streams, the stdin stream into the pipe.

        Each pump owns its fd from here on; the fd is closed when the pump's task is done,
        even if it was cancelled before it ever ran.
        """
        if self.stdout_fd is not None:
            fd, self.stdout_fd = self.stdout_fd, None
            self.output_pumps.append(_owning(_output(channel, fd, self.streams.stdout), fd))
        if self.stderr_fd is not None:
            fd, self.stderr_fd = self.stderr_fd, None
            self.output_pumps.append(_owning(_output(channel, fd, self.streams.stderr), fd))
        if self.stdin_fd is not None:
            fd, self.stdin_fd = self.stdin_fd, None
            self.input_pump = _owning(_input(channel, self.streams.stdin, fd), fd)

    async def wait_output(self) -> None:
        """Return once every output pump sent all its data and its EOF frame (or failed)."""
        if self.output_pumps:
            await asyncio.gather(*self.output_pumps, return_exceptions=True)

    async def close_stdin(self) -> None:
        """Wait until the stdin stream's EOF was written through, the pipe then being closed."""
        if self.input_pump is not None:
            await asyncio.shield(asyncio.gather(self.input_pump, return_exceptions=True))
        elif self.stdin_fd is not None:
            os.close(self.stdin_fd)
            self.stdin_fd = None

    def close(self) -> None:
        """Cancel every pump and close every fd still held (container removal, failures)."""
        for task in (*self.output_pumps, self.input_pump):
            if task is not None and not task.done():
                task.cancel()
        self.close_child_ends()
        for name in ("stdin_fd", "stdout_fd", "stderr_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def _pipe(keep_write: bool) -> tuple[int, int]:
    """A pipe whose agent-side end (write end if keep_write, else read end) is non-blocking."""
    r, w = os.pipe()
    os.set_blocking(w if keep_write else r, False)
    return r, w


def _owning(coro: Coroutine[Any, Any, None], fd: int) -> asyncio.Task[None]:
    """Schedule a pump and close its fd once the task is done, whatever way it ended."""
    task = asyncio.get_running_loop().create_task(coro)
    task.add_done_callback(lambda _: os.close(fd))
    return task


async def _output(channel: DataChannel, fd: int, stream: int) -> None:
    """Pump one output pipe to its stream (all data, then EOF)."""
    try:
        await pump_fd_to_stream(channel, fd, stream)
    except Exception as exc:
        log.warning("stdio stream %d: output pump stopped: %s", stream, exc)
        raise


async def _input(channel: DataChannel, stream: int, fd: int) -> None:
    """Pump the stdin stream into its pipe until the stream's EOF."""
    try:
        await pump_stream_to_fd(channel, stream, fd)
    except Exception as exc:
        log.warning("stdio stream %d: stdin pump stopped: %s", stream, exc)
        raise
