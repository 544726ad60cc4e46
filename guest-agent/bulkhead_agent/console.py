"""Receives a terminal's pty master from crun over a `--console-socket` unix socket.

crun creates the pty inside the container and sends the master with SCM_RIGHTS, then exits;
the agent keeps the master and pumps it to the data channel like a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from bulkhead_wire.stdio.pump import wait_fd

from bulkhead_agent.errors import FailedPrecondition

RECEIVE_TIMEOUT = 10.0  # seconds after crun finished for the master to arrive


class ConsoleSocket:
    """A listening socket for one crun run; receive() returns the master fd crun sent."""

    def __init__(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(path)
            self.sock.listen(1)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self._receiving: asyncio.Task[int] | None = None
        self._taken = False

    def start(self) -> None:
        """Begin accepting before crun runs, so its connect never finds nobody listening."""
        self._receiving = asyncio.get_running_loop().create_task(self._receive())

    async def receive(self, what: str) -> int:
        """The master fd; crun has already exited, so it is there now or it never comes."""
        assert self._receiving is not None
        try:
            fd = await asyncio.wait_for(asyncio.shield(self._receiving), RECEIVE_TIMEOUT)
        except TimeoutError:
            raise FailedPrecondition(f"{what}: crun sent no terminal on {self.path}") from None
        self._taken = True
        return fd

    async def _receive(self) -> int:
        """Accept crun's connection and take the one fd it carries."""
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.sock)
        with conn:
            conn.setblocking(False)
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(conn, 4096, 1, socket.MSG_CMSG_CLOEXEC)
                except BlockingIOError:
                    await wait_fd(conn.fileno(), writable=False)
                    continue
                if not fds:
                    raise FailedPrecondition(f"crun closed {self.path} without sending a terminal")
                return fds[0]

    def close(self) -> None:
        """Stop listening, remove the socket file, and close a master nobody took."""
        task = self._receiving
        if task is not None:
            if not task.done():
                task.cancel()
            elif not (self._taken or task.cancelled() or task.exception() is not None):
                os.close(task.result())
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

