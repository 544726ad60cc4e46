"""Host ends of a process's stdio: containerd's FIFOs, a file:// log or a binary:// logger,
wired to data-channel streams."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from bulkhead_wire.stdio.link import Pump, StreamLink

from bulkhead.stdio.binary_logger import SCHEMES as LOGGER_SCHEMES
from bulkhead.stdio.binary_logger import BinaryLogger, LoggerError
from bulkhead.stdio.fifo import NotAFifo, open_fifo
from bulkhead.stdio.stdin_fifo import StdinError, StdinFifo


class StdioError(Exception):
    """A stdio path or URI cannot be used; the message names it."""


@dataclass
class Sink:
    """Where a guest output stream lands on the host."""

    fd: int  # may serve both output streams (file://); closed once, by ProcessIO.close


def open_output(uri: str, shared_with: tuple[str, Sink] | None = None) -> Sink | None:
    """Open stdout/stderr: "" → none, fifo path, or file:///abs (append, 0644)."""
    if not uri:
        return None
    if shared_with is not None and shared_with[0] == uri:
        return Sink(shared_with[1].fd)
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = parsed.path
        if not os.path.isabs(path):
            raise StdioError(f"log URI {uri!r}: path must be absolute")
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        try:
            return Sink(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                0o644))
        except OSError as exc:
            raise StdioError(f"log URI {uri!r}: {exc.strerror}") from None
    if parsed.scheme not in ("", "fifo"):
        raise StdioError(f"stdio URI {uri!r}: scheme {parsed.scheme!r} is not supported "
                         "(use a FIFO path, file:///path or binary:///path)")
    path = parsed.path if parsed.scheme else uri
    try:
        # O_RDWR keeps the FIFO open even if the reader goes away (no EPIPE, like runc's
        # extra read handle), and never blocks at open.
        return Sink(open_fifo(path, os.O_RDWR))
    except NotAFifo as exc:
        raise StdioError(f"stdio FIFO: {exc} (use file:// for a log file)") from None
    except OSError as exc:
        raise StdioError(f"stdio FIFO {path}: {exc.strerror}") from None


@dataclass
class ProcessIO:
    """All stdio of one process: stream ids, host fds, a logger process, and the copy tasks."""

    stdin: StdinFifo | None = None
    stdout: Sink | None = None
    stderr: Sink | None = None
    logger: BinaryLogger | None = None
    stream_ids: tuple[int, int, int] = (0, 0, 0)
    input_pump: Pump | None = None
    output_pumps: list[Pump] = field(default_factory=list)
    stdin_closed: bool = False  # CloseIO came (maybe before the input pump started)

    @classmethod
    async def open(cls, stdin: str, stdout: str, stderr: str, terminal: bool,
                   next_stream: Callable[[], int], container_id: str = "",
                   namespace: str = "") -> ProcessIO:
        """Open every host end first, so a bad path fails before anything runs in the guest.

        With a terminal all output arrives on stdout and the stderr end is never opened, as
        under runc (the CRI still creates a stderr FIFO then).
        """
        if terminal:
            stderr = ""
        io = cls()
        try:
            io.stdin = StdinFifo.open(stdin)
            if urlparse(stdout).scheme in LOGGER_SCHEMES:
                await io._start_logger(stdout, stderr, container_id, namespace)
            else:
                io.stdout = open_output(stdout)
                io.stderr = open_output(stderr, (stdout, io.stdout) if io.stdout else None)
        except StdinError as exc:
            await io.close()
            raise StdioError(str(exc)) from None
        except BaseException:
            await io.close()
            raise
        io.stream_ids = tuple(next_stream() if end is not None else 0  # type: ignore[assignment]
                              for end in (io.stdin, io.stdout, io.stderr))
        return io

    async def _start_logger(self, stdout: str, stderr: str, container_id: str,
                            namespace: str) -> None:
        """binary://: one logger process takes both output streams (fds it owns)."""
        try:
            self.logger = await BinaryLogger.start(stdout, container_id, namespace)
        except LoggerError as exc:
            raise StdioError(str(exc)) from None
        self.stdout = Sink(self.logger.stdout_fd)
        if stderr:
            self.stderr = Sink(self.logger.stderr_fd)

    def start_output(self, link: StreamLink,
                     on_data: Callable[[int], None] | None = None) -> None:
        """Begin copying guest output to the sinks (before the process can write)."""
        for sink, stream in ((self.stdout, self.stream_ids[1]), (self.stderr, self.stream_ids[2])):
            if sink is not None:
                self.output_pumps.append(link.receive_into(stream, sink.fd, on_data))

    def start_input(self, link: StreamLink) -> None:
        """Begin forwarding stdin (after the guest registered the stream)."""
        if self.stdin is not None and self.input_pump is None:
            self.input_pump = link.send_from(self.stream_ids[0], self.stdin.fd)
            if self.stdin_closed:
                self.input_pump.close_output()

    async def drain_output(self, marks: dict[int, int] | None = None) -> None:
        """Wait until the sinks took what marks say per stream (everything, to EOF, if None)."""
        for pump in self.output_pumps:
            if marks is None:
                await pump.wait()
            else:
                await pump.progress.reach(marks.get(pump.stream, 0))

    def close_stdin(self) -> None:
        """CloseIO(stdin): what the FIFO holds now goes through, then EOF."""
        self.stdin_closed = True
        if self.input_pump is not None:
            self.input_pump.close_output()

    async def close(self) -> None:
        """Stop copying, close every host fd (each once) and let a logger finish."""
        for pump in (self.input_pump, *self.output_pumps):
            if pump is not None:
                pump.cancel()
        if self.stdin is not None:
            self.stdin.close()
        fds: set[int] = set()
        if self.logger is None:
            fds.update(sink.fd for sink in (self.stdout, self.stderr) if sink is not None)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stdin = self.stdout = self.stderr = None
        logger, self.logger = self.logger, None
        if logger is not None:
            await logger.close()
