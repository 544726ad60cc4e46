"""Where the agent gets its VM's channel secret: the key port (a virtio-serial port whose host
end only the VM's shim holds), or, for a development agent on the host, a root-only file.

The secret is asked for at every new host connection, so a VM cloned from a template uses its
own shim's secret, never the template's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

from bulkhead_wire import channel_auth
from bulkhead_wire.channel_auth import AuthError
from bulkhead_wire.guest_abi import KEY_PORT_NAME
from bulkhead_wire.stdio.pump import wait_fd


class KeySource(Protocol):
    """Gives the secret the host must prove on the connection being opened."""

    async def get(self) -> bytes: ...


class KeyFile:
    """A development agent's secret: a file its harness wrote (0600)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def get(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                key = f.read(channel_auth.KEY_BYTES + 1)
        except OSError as exc:
            raise AuthError(f"channel key file {self.path}: {exc.strerror}") from None
        if len(key) != channel_auth.KEY_BYTES:
            raise AuthError(f"channel key file {self.path}: not {channel_auth.KEY_BYTES} bytes")
        return key


class KeyPort:
    """The virtio-serial key port, opened once (it stays open so the shim's answer to a request
    is never dropped, in this VM or in a clone resumed from it)."""

    def __init__(self, find: Callable[[], Awaitable[str]], dev: str = "/dev") -> None:
        self._find = find  # the port's /dev entry, once the device has it
        self.dev = dev
        self._fd = -1
        self._lock = asyncio.Lock()

    async def get(self) -> bytes:
        async with self._lock:
            if self._fd < 0:
                entry = await self._find()
                self._fd = os.open(f"{self.dev}/{entry}",
                                   os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            self._drain()
            os.write(self._fd, channel_auth.KEY_REQUEST)
            try:
                return await asyncio.wait_for(self._read_key(), channel_auth.AUTH_TIMEOUT)
            except TimeoutError:
                raise AuthError(f"no answer on {KEY_PORT_NAME} within "
                                f"{channel_auth.AUTH_TIMEOUT:g} s") from None

    def _drain(self) -> None:
        """Drop what an earlier answer left (a request that timed out was answered late)."""
        while True:
            try:
                if not os.read(self._fd, 4096):
                    return
            except OSError:  # EAGAIN: nothing left
                return

    async def _read_key(self) -> bytes:
        out = b""
        while len(out) < channel_auth.KEY_BYTES:
            try:
                chunk = os.read(self._fd, channel_auth.KEY_BYTES - len(out))
            except BlockingIOError:
                await wait_fd(self._fd, writable=False)
                continue
            if not chunk:
                await asyncio.sleep(0.01)  # no host side (yet): virtio-serial reads 0
                continue
            out += chunk
        return out
