"""`binary:///path?k=v` log URIs: a logger process reading stdout on fd 3, stderr on fd 4.

The containerd contract (`NewBinaryIO` in containerd's
`cmd/containerd-shim-runc-v2/process/io.go`): args are the query pairs flattened to `k v ...`,
the environment is CONTAINER_ID and CONTAINER_NAMESPACE, fd 5 is a pipe the logger writes a
byte to (or closes) once ready; the process starts only after that. `binary-v2://` needs the
byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlparse

from bulkhead_wire.stdio.pump import read_fd, wait_fd

log = logging.getLogger(__name__)

SCHEMES = ("binary", "binary-v2")
READY_TIMEOUT = 10.0  # seconds a logger may take to signal readiness
EXIT_GRACE = 5.0  # seconds a logger may take to drain after its pipes closed
EXIT_CHECK = 0.2  # seconds to tell a logger that closed fd 5 (ready) from one that died


class LoggerError(Exception):
    """The logger binary could not be started or never became ready; names the URI."""


@dataclass
class BinaryLogger:
    """A running logger process and the write ends of its stdout/stderr pipes."""

    uri: str
    pid: int
    pidfd: int
    stdout_fd: int
    stderr_fd: int

    @classmethod
    async def start(cls, uri: str, container_id: str, namespace: str) -> BinaryLogger:
        """Spawn the logger and wait until it says it is ready."""
        parsed = urlparse(uri)
        if not parsed.path or not os.path.isabs(parsed.path):
            raise LoggerError(f"log URI {uri!r}: the logger path must be absolute")
        args = [item for pair in parse_qsl(parsed.query, keep_blank_values=True)
                for item in pair]
        env = {"CONTAINER_ID": container_id, "CONTAINER_NAMESPACE": namespace}
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, ready
        child = (pipes[0][0], pipes[1][0], pipes[2][1])
        actions: list[Any] = [(os.POSIX_SPAWN_OPEN, n, os.devnull, os.O_RDWR, 0)
                                          for n in (0, 1, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, 3 + n) for n, fd in enumerate(child)]
        try:
            pid = os.posix_spawn(parsed.path, [parsed.path, *args], env,
                                 file_actions=actions, setsid=True)
        except OSError as exc:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            raise LoggerError(f"log URI {uri!r}: cannot start {parsed.path}: "
                              f"{exc.strerror}") from None
        for fd in child:
            os.close(fd)
        logger = cls(uri, pid, os.pidfd_open(pid), pipes[0][1], pipes[1][1])
        try:
            await logger._await_ready(pipes[2][0], needs_byte=parsed.scheme == "binary-v2")
        except BaseException:
            await logger.close(grace=0.0)
            raise
        finally:
            os.close(pipes[2][0])
        for fd in (logger.stdout_fd, logger.stderr_fd):
            os.set_blocking(fd, False)
        return logger

    async def _await_ready(self, ready_fd: int, needs_byte: bool) -> None:
        """One byte or EOF on the ready pipe (EOF alone is not enough for binary-v2)."""
        os.set_blocking(ready_fd, False)
        try:
            data = await asyncio.wait_for(read_fd(ready_fd, 1), READY_TIMEOUT)
        except TimeoutError:
            raise LoggerError(f"log URI {self.uri!r}: the logger did not signal readiness on "
                              f"fd 5 within {READY_TIMEOUT:g} s") from None
        if data:
            return
        if not needs_byte:  # EOF means ready, unless it was the logger dying
            try:
                await asyncio.wait_for(self._reaped(), EXIT_CHECK)
            except TimeoutError:
                return
        raise LoggerError(f"log URI {self.uri!r}: the logger exited or closed fd 5 "
                          "without signalling readiness")

    def _exited(self) -> bool:
        """True if the logger process has already ended (reaped here)."""
        with contextlib.suppress(ChildProcessError):
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            return pid == self.pid
        return True

    async def close(self, grace: float = EXIT_GRACE) -> None:
        """Close our pipe ends (EOF for the logger), let it finish, kill it if it lingers."""
        for fd in (self.stdout_fd, self.stderr_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stdout_fd = self.stderr_fd = -1
        try:
            await asyncio.wait_for(self._reaped(), grace)
        except TimeoutError:
            if grace:
                log.warning("logger %s (pid %d) still running %g s after its pipes closed; "
                            "killing it", self.uri, self.pid, grace)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            await self._reaped()
        finally:
            os.close(self.pidfd)

    async def _reaped(self) -> None:
        """Wait for the logger to exit (pidfd readable) and reap it."""
        while not self._exited():
            await wait_fd(self.pidfd, writable=False)
