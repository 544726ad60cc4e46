"""The stdio of one container process (pipes, or a pty master) and the pumps that join it to the
data channel.

Pipe ends handed to crun (and so to the container) stay blocking; the ends the agent keeps are
non-blocking and handed to the stdio link, which copies them on its own dup: the agent closes
its ends right away (the stdin pipe's write end must close for the process to see EOF). A
terminal process has no pipes: crun hands over the pty master, whose output goes to the stdout
stream.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct
import termios
from dataclasses import dataclass, field

from bulkhead_wire.stdio.link import Pump, StreamLink

from bulkhead_agent.errors import FailedPrecondition

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
    terminal: bool = False
    child: list[int | None] = field(default_factory=lambda: [None, None, None])
    stdin_fd: int | None = None
    stdout_fd: int | None = None
    stderr_fd: int | None = None
    console_fd: int | None = None  # the pty master, kept for ResizePty
    input_pump: Pump | None = None
    output_pumps: list[Pump] = field(default_factory=list)

    @classmethod
    def open(cls, streams: Streams, terminal: bool = False) -> ProcessIO:
        """Create a pipe for every wanted stream (none for a terminal: see attach_console)."""
        io = cls(streams, terminal)
        if terminal:
            return io
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

    @property
    def console_wanted(self) -> bool:
        """A terminal process whose pty master has not arrived yet."""
        return self.terminal and self.console_fd is None

    def attach_console(self, master: int) -> None:
        """Take the pty master crun sent: output to the stdout stream, stdin stream into it."""
        os.set_blocking(master, False)
        self.console_fd = master
        if self.streams.stdout:
            self.stdout_fd = os.dup(master)
        if self.streams.stdin:
            self.stdin_fd = os.dup(master)

    def resize(self, width: int, height: int) -> None:
        """Set the terminal's window size (the foreground process gets SIGWINCH)."""
        if self.console_fd is None:
            raise FailedPrecondition("the process has no terminal to resize")
        size = struct.pack("HHHH", height, width, 0, 0)
        fcntl.ioctl(self.console_fd, termios.TIOCSWINSZ, size)

    def close_child_ends(self) -> None:
        """Drop the container's ends once crun has passed them on, so EOF can be seen."""
        for i, fd in enumerate(self.child):
            if fd is not None:
                os.close(fd)
                self.child[i] = None

    def start(self, link: StreamLink) -> None:
        """Start copying: stdout/stderr to their streams, the stdin stream into the pipe (or
        the pty master). The link copies on its own dups; ours are closed here."""
        try:
            if self.stdout_fd is not None:
                self.output_pumps.append(link.send_from(self.streams.stdout, self.stdout_fd))
            if self.stderr_fd is not None:
                self.output_pumps.append(link.send_from(self.streams.stderr, self.stderr_fd))
            if self.stdin_fd is not None:
                self.input_pump = link.receive_into(self.streams.stdin, self.stdin_fd)
        finally:
            for name in ("stdin_fd", "stdout_fd", "stderr_fd"):
                fd = getattr(self, name)
                if fd is not None:
                    os.close(fd)
                    setattr(self, name, None)

    def exit_marks(self) -> dict[int, int]:
        """Per output stream, its length up to the process's exit (call when it was reaped)."""
        return {pump.stream: pump.exit_mark() for pump in self.output_pumps}

    async def wait_output(self, marks: dict[int, int] | None = None) -> None:
        """Return once every output pump sent what `marks` say (all of it and EOF if None)."""
        for pump in self.output_pumps:
            if marks is None:
                await pump.wait()
            else:
                await pump.progress.reach(marks.get(pump.stream, 0))

    async def close_stdin(self) -> None:
        """Wait until the stdin stream's EOF was written through, the pipe then being closed."""
        if self.input_pump is not None:
            await asyncio.shield(self.input_pump.wait())
        elif self.stdin_fd is not None:
            os.close(self.stdin_fd)
            self.stdin_fd = None

    def close(self) -> None:
        """Cancel every pump and close every fd still held (container removal, failures)."""
        for pump in (*self.output_pumps, self.input_pump):
            if pump is not None:
                pump.cancel()
        self.close_child_ends()
        for name in ("stdin_fd", "stdout_fd", "stderr_fd", "console_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def _pipe(keep_write: bool) -> tuple[int, int]:
    """A pipe whose agent-side end (write end if keep_write, else read end) is non-blocking."""
    r, w = os.pipe()
    os.set_blocking(w if keep_write else r, False)
    return r, w
