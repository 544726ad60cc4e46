"""The key port: how the agent gets its VM's channel secret without a path anyone can open.

QEMU inherits one end of a socketpair as the backend of the `bulkhead.key` virtio-serial port;
the shim keeps the other and answers each KEY_REQUEST the agent writes with the secret. No file,
no command line, no listening socket: only this shim and its QEMU hold it. A template clone's
agent asks again when its clone's shim connects, so it gets that shim's secret, not the
template's. What the guest writes here is read in small chunks and answered at most once per
chunk: a flood costs the shim nothing it keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from bulkhead_wire.channel_auth import KEY_REQUEST

log = logging.getLogger(__name__)

READ_SIZE = 64


class KeyPort:
    """The shim's end of one VM's key port and the VM's secret."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.qemu_fd = theirs.detach()  # inherited by QEMU (chardev socket,fd=N)
        self._ours.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.answered = 0

    def start(self) -> None:
        """Answer requests on the running loop (after QEMU was spawned)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ours.fileno(), self._on_request)

    def release_qemu_fd(self) -> None:
        """Our copy of QEMU's end, once QEMU holds it (or was never spawned)."""
        if self.qemu_fd >= 0:
            with contextlib.suppress(OSError):
                socket.socket(fileno=self.qemu_fd).close()
            self.qemu_fd = -1

    def _on_request(self) -> None:
        try:
            data = self._ours.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            data = b""
            log.debug("key port: %s", exc)
        if not data:  # QEMU is gone
            self.close()
            return
        if KEY_REQUEST in data:
            try:
                self._ours.send(self.key)
                self.answered += 1
            except OSError as exc:  # full (a guest that asks and never reads): it asks again
                log.debug("key port: answer not sent: %s", exc)

    def close(self) -> None:
        """Stop answering and drop our end (idempotent)."""
        if self._loop is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.remove_reader(self._ours.fileno())
            self._loop = None
        self._ours.close()
        self.release_qemu_fd()
