"""Copy loops between non-blocking file descriptors and data-channel streams (the Python engine).

A source pipe or FIFO gives read() == 0 both before any writer connected and after the last one
left; only the second is EOF. Linux tells them apart with POLLHUP (set once a writer came and
went), which matters for containerd's stdin FIFO: its client may open its end after we open ours,
and may close it without ever calling CloseIO. The C engine applies the same rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import stat
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


def hung_up(fd: int) -> bool:
    """True once every writer that connected to the FIFO has closed it."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in poller.poll(0))


@dataclass
class Progress:
    """How far a pump got, so an exit can wait for exactly its process's bytes, not for an EOF
    that a surviving child holding the same pipe may never send."""

    taken: int = 0  # bytes read from the source
    done: int = 0  # bytes passed on: sent on the stream, or written to (or dropped for) the sink
    finished: bool = False
    error: str = ""  # why the pump stopped early ("" if it did not)
    listener: Callable[[int], None] | None = field(default=None, repr=False)  # gets each advance
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def advance(self, n: int) -> None:
        self.done += n
        self._changed.set()
        if self.listener is not None:
            self.listener(n)

    def finish(self) -> None:
        self.finished = True
        self._changed.set()

    async def reach(self, total: int) -> None:
        """Return once `total` bytes were passed on, or the pump ended."""
        while self.done < total and not self.finished:
            self._changed.clear()
            await self._changed.wait()

    async def wait_finished(self) -> None:
        """Return once the pump ended (EOF passed on, or it stopped)."""
        while not self.finished:
            self._changed.clear()
            await self._changed.wait()


@dataclass
class CloseSignal:
    """CloseIO for an output pump: forward what the fd holds now, then EOF."""

    closing: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def close(self) -> None:
        self.closing = True
        self._wake.set()


async def pump_fd_to_stream(channel: DataChannel, fd: int, stream: int,
                            progress: Progress | None = None,
                            close: CloseSignal | None = None) -> None:
    """Send everything read from fd until EOF (FIFO rule above) or CloseIO, then EOF."""
    progress = progress or Progress()
    close = close or CloseSignal()
    fifo = stat.S_ISFIFO(os.fstat(fd).st_mode)
    try:
        while True:
            data = await _read_or_wait(fd, fifo, close, channel.closed_event)
            if data is None:
                break
            progress.taken += len(data)
            await channel.send(stream, data)
            progress.advance(len(data))
    finally:
        with contextlib.suppress(ChannelClosed):
            await channel.send_eof(stream)
        progress.finish()


async def _read_or_wait(fd: int, fifo: bool, close: CloseSignal,
                        channel_closed: asyncio.Event) -> bytes | None:
    """The next chunk of fd, None at its EOF or once CloseIO found it empty; ChannelClosed
    once the channel is gone (nothing could be sent anyway)."""
    while True:
        try:
            data = os.read(fd, MAX_CHUNK)
        except BlockingIOError:
            data = None
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pty master whose last slave fd closed
                return None
            raise
        if data:
            return data
        if close.closing or (data == b"" and (not fifo or hung_up(fd))):
            return None
        if channel_closed.is_set():
            raise ChannelClosed("data channel closed")
        await _readable_or_closed(fd, close, channel_closed)


async def _readable_or_closed(fd: int, close: CloseSignal, channel_closed: asyncio.Event) -> None:
    """Wait for data, for the last writer to leave, for CloseIO or for the channel to close."""
    close._wake.clear()
    waits = [asyncio.ensure_future(wait_fd(fd, writable=False)),
             asyncio.ensure_future(close._wake.wait()),
             asyncio.ensure_future(channel_closed.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in waits:
            fut.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def pump_stream_to_fd(channel: DataChannel, stream: int, fd: int,
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
