"""A minimal asyncio QMP client: greeting, capability negotiation, one command at a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections import deque
from typing import Any


class QMPError(Exception):
    """A QMP command failed or the QMP connection broke; the message names the command."""


class QMPClient:
    """One QMP connection; execute() serialises commands and keeps events for later reading."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 name: str = "qmp") -> None:
        self._reader = reader
        self._writer = writer
        self._name = name
        self._lock = asyncio.Lock()
        self._next_id = 0
        self.greeting: dict[str, Any] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=256)

    @classmethod
    async def connect(cls, path: str, timeout: float = 5.0) -> QMPClient:
        """Dial a QMP unix socket, read the greeting and leave negotiation mode."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
        except (TimeoutError, OSError) as exc:
            raise QMPError(f"QMP connect to {path} failed: {exc!r}") from exc
        client = cls(reader, writer, name=path)
        try:
            client.greeting = await asyncio.wait_for(client._read_message(), timeout)
            if "QMP" not in client.greeting:
                raise QMPError(f"{path}: expected a QMP greeting, got {client.greeting!r}")
            await client.execute("qmp_capabilities", timeout=timeout)
        except (OSError, asyncio.IncompleteReadError) as exc:
            await client.close()
            raise QMPError(f"QMP greeting on {path}: connection lost: {exc!r}") from exc
        except BaseException:
            await client.close()
            raise
        return client

    async def execute(self, command: str, arguments: dict[str, Any] | None = None,
                      timeout: float | None = 10.0, fd: int = -1) -> Any:
        """Run one command and return its "return" value; an "error" reply raises QMPError.

        With fd, the descriptor travels with the command as SCM_RIGHTS (for `getfd`).
        """
        async with self._lock:
            self._next_id += 1
            msg_id = f"bh-{self._next_id}"
            request: dict[str, Any] = {"execute": command, "id": msg_id}
            if arguments:
                request["arguments"] = arguments
            data = json.dumps(request).encode() + b"\n"
            try:
                if fd >= 0:
                    self._send_with_fd(data, fd)
                else:
                    self._writer.write(data)
                    await self._writer.drain()
                reply = await asyncio.wait_for(self._reply_for(msg_id), timeout)
            except TimeoutError:
                raise QMPError(f"QMP {command} on {self._name}: no reply within {timeout} s"
                               ) from None
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise QMPError(f"QMP {command} on {self._name}: connection lost: {exc!r}"
                               ) from exc
        if "error" in reply:
            err = reply["error"]
            raise QMPError(f"QMP {command} failed: {err.get('class')}: {err.get('desc')}")
        return reply.get("return")

    def _send_with_fd(self, data: bytes, fd: int) -> None:
        """sendmsg on the transport's socket (its write buffer is empty: commands are serial)."""
        sock = self._writer.get_extra_info("socket")
        dup = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            dup.setblocking(True)
            socket.send_fds(dup, [data], [fd])
        finally:
            dup.close()

    async def _reply_for(self, msg_id: str) -> dict[str, Any]:
        """Read messages until the reply carrying msg_id, stashing events on the way."""
        while True:
            msg = await self._read_message()
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == msg_id:
                return msg

    async def _read_message(self) -> dict[str, Any]:
        """One JSON object per line, as QEMU writes them."""
        line = await self._reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QMPError(f"{self._name}: bad QMP message {line[:200]!r}") from exc
        if not isinstance(msg, dict):
            raise QMPError(f"{self._name}: bad QMP message {line[:200]!r}")
        return msg

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
