"""Copy loops between non-blocking file descriptors and data-channel streams."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from bulkhead_wire.stdio.channel import MAX_CHUNK, ChannelClosed, DataChannel


async def wait_fd(fd: int, writable: bool) -> None:
    """Wait until fd is readable (or writable) using the running loop's selector."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    if writable:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def read_fd(fd: int, size: int = MAX_CHUNK) -> bytes:
    """Read from a non-blocking fd; b"" at EOF (EIO, as a pty master gives, counts as EOF)."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await wait_fd(fd, writable=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def write_fd(fd: int, data: bytes) -> None:
    """Write all of data to a non-blocking fd, waiting while it is full."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await wait_fd(fd, writable=True)
            continue
        view = view[n:]


@dataclass
class Progress:
    """How far a pump got, so an exit can wait for exactly its process's bytes, not for an EOF
    that a surviving child holding the same pipe may never send."""

    taken: int = 0  # bytes read from the source
    done: int = 0  # bytes passed on: sent on the stream, or written to (or dropped for) the sink
    finished: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def advance(self, n: int) -> None:
        self.done += n
        self._changed.set()

    def finish(self) -> None:
        self.finished = True
        self._changed.set()

    async def reach(self, total: int) -> None:
        """Return once `total` bytes were passed on, or the pump ended."""
        while self.done < total and not self.finished:
            self._changed.clear()
            await self._changed.wait()


async def pump_fd_to_stream(channel: DataChannel, fd: int, stream: int,
                            progress: Progress | None = None) -> None:
    """Send everything read from fd until EOF, then the stream's EOF frame."""
    progress = progress or Progress()
    try:
        while True:
            data = await read_fd(fd)
            if not data:
                break
            progress.taken += len(data)
            await channel.send(stream, data)
            progress.advance(len(data))
    finally:
        with contextlib.suppress(ChannelClosed):
            await channel.send_eof(stream)
        progress.finish()


async def pump_stream_to_fd(channel: DataChannel, stream: int, fd: int,
                            on_data: Callable[[int], None] | None = None,
                            progress: Progress | None = None) -> None:
    """Write a stream into fd until its EOF, granting credit only once bytes are written.

    If the sink goes away (EPIPE; EIO from a pty whose other side closed) the rest is drained
    and discarded so the producer never hangs.
    """
    progress = progress or Progress()
    sink_gone = False
    try:
        while True:
            chunk = await channel.read(stream)
            if not chunk:
                return
            if on_data is not None:
                on_data(len(chunk))
            if not sink_gone:
                try:
                    await write_fd(fd, chunk)
                except OSError as exc:
                    if exc.errno not in (errno.EPIPE, errno.EIO):
                        raise
                    sink_gone = True
            progress.advance(len(chunk))
            await channel.grant(stream, len(chunk))
    finally:
        progress.finish()
