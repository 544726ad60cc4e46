"""A process's stdin FIFO, forwarded to its stream until the client closes it or sends CloseIO.

A FIFO reader gets read() == 0 both before any writer connected and after the last one left;
only the second is EOF. Linux tells them apart with POLLHUP (set once a writer came and went),
which matters because containerd's client may open its end after we open ours, and may close
it without ever calling CloseIO (ctr does, when its own stdin ends very early).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from dataclasses import dataclass, field
from urllib.parse import urlparse

from bulkhead_wire.stdio.channel import MAX_CHUNK, ChannelClosed, DataChannel


class StdinError(Exception):
    """The stdin FIFO cannot be opened; the message names it."""


def hung_up(fd: int) -> bool:
    """True once every writer that connected to the FIFO has closed it."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in poller.poll(0))


@dataclass
class StdinFifo:
    """Our read end of the client's stdin FIFO."""

    fd: int
    closing: bool = False
    _wake: asyncio.Future[None] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, uri: str) -> StdinFifo | None:
        """Open the stdin FIFO the client created; "" means no stdin."""
        if not uri:
            return None
        path = urlparse(uri).path if uri.startswith("fifo://") else uri
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise StdinError(f"stdin FIFO {path}: {exc.strerror}") from None
        return cls(fd)

    def close_input(self) -> None:
        """CloseIO: forward what the FIFO holds now, then EOF, even if the client stays."""
        self.closing = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def pump(self, channel: DataChannel, stream: int) -> None:
        """Forward everything to the stream, then its EOF frame."""
        try:
            while True:
                try:
                    data = os.read(self.fd, MAX_CHUNK)
                except BlockingIOError:
                    data = None
                if data:
                    await channel.send(stream, data)
                    continue
                if self.closing or (data == b"" and hung_up(self.fd)):
                    return
                await self._readable()
        finally:
            with contextlib.suppress(ChannelClosed):
                await channel.send_eof(stream)

    async def _readable(self) -> None:
        """Wait for data, for the last writer to leave, or for CloseIO."""
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()

        def ready() -> None:
            if not wake.done():
                wake.set_result(None)

        loop.add_reader(self.fd, ready)
        try:
            await wake
        finally:
            loop.remove_reader(self.fd)
            self._wake = None

    def close(self) -> None:
        """Release the FIFO."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
