"""The Python engine of the stdio link: a DataChannel plus one asyncio pump per stream."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Callable, Coroutine
from typing import Any

from bulkhead_wire.stdio.channel import WINDOW, ChannelClosed, DataChannel
from bulkhead_wire.stdio.link import STREAM_LIMIT, Pump, StreamLink
from bulkhead_wire.stdio.pump import CloseSignal, Progress, pump_fd_to_stream, pump_stream_to_fd


class PythonPump(Pump):
    """A pump task on the link's own dup of the fd, closed when the task ends."""

    def __init__(self, stream: int, fd: int, progress: Progress,
                 close: CloseSignal | None = None,
                 unstarted_eof: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        super().__init__(stream, progress)
        self.fd = fd
        self._close = close
        self._unstarted_eof = unstarted_eof  # output: the EOF a pump cancelled unstarted owes
        self.started = False
        self.task: asyncio.Task[None] | None = None

    def run(self, coro: Coroutine[Any, Any, None]) -> PythonPump:
        self._coro = coro
        self.task = asyncio.get_running_loop().create_task(self._guarded(coro))
        self.task.add_done_callback(lambda _: os.close(self.fd))
        return self

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        self.started = True
        try:
            await coro
        except Exception as exc:  # the stream ends; the link and the other streams go on
            self.progress.error = str(exc) or type(exc).__name__
        finally:
            self.progress.finish()

    def exit_mark(self) -> int:
        queued = 0
        if self.task is not None and not self.task.done():
            with contextlib.suppress(OSError):
                queued = struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD,
                                                        b"\0\0\0\0"))[0]
        return self.progress.taken + queued

    def close_output(self) -> None:
        if self._close is not None:
            self._close.close()

    def cancel(self) -> None:
        """Stop; an output stream still ends with EOF (the pump's own, or one sent for a pump
        cancelled before it ever ran), so the peer's sink closes."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            if not self.started:
                self._coro.close()  # never ran: nothing to unwind
                if self._unstarted_eof is not None:
                    self.task = asyncio.ensure_future(self._unstarted_eof())
        self.progress.finish()


class PythonLink(StreamLink):
    """Pure-Python stdio link (the fallback engine)."""

    engine = "python"

    def __init__(self, channel: DataChannel) -> None:
        super().__init__()
        self.channel = channel
        self._pumps: set[PythonPump] = set()
        channel.start()
        self._watcher = asyncio.ensure_future(self._watch_close())  # held: tasks are weak

    @classmethod
    async def open(cls, channel: socket.socket | int, window: int = WINDOW) -> PythonLink:
        """On a connected socket or a character device fd (taken)."""
        if isinstance(channel, socket.socket):
            reader, writer = await asyncio.open_connection(sock=channel, limit=STREAM_LIMIT)
        else:
            reader, writer = await fd_streams(channel)
        return cls(DataChannel(reader, writer, window))

    async def _watch_close(self) -> None:
        await self.channel.closed_event.wait()
        self.closed_event.set()

    def send_from(self, stream: int, fd: int) -> Pump:
        self.channel.open_output(stream)
        close = CloseSignal()
        pump = PythonPump(stream, os.dup(fd), Progress(), close, lambda: self._eof(stream))
        return self._run(pump, pump_fd_to_stream(self.channel, pump.fd, stream, pump.progress,
                                                 close))

    def receive_into(self, stream: int, fd: int,
                     on_data: Callable[[int], None] | None = None) -> Pump:
        self.channel.inbound(stream)
        pump = PythonPump(stream, os.dup(fd), Progress(listener=on_data))
        return self._run(pump, pump_stream_to_fd(self.channel, stream, pump.fd, pump.progress))

    async def _eof(self, stream: int) -> None:
        with contextlib.suppress(ChannelClosed):
            await self.channel.send_eof(stream)

    def _run(self, pump: PythonPump, coro: Coroutine[Any, Any, None]) -> Pump:
        """Start the pump's task; the link forgets it once it ended."""
        self._pumps.add(pump)
        pump.run(coro)
        assert pump.task is not None
        pump.task.add_done_callback(lambda _: self._pumps.discard(pump))
        return pump

    async def close(self) -> None:
        tasks = [p.task for p in self._pumps if p.task is not None]
        for pump in self._pumps:
            pump.cancel()
        self._pumps.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.channel.close()
        self._watcher.cancel()
        self.closed_event.set()


class _WriteProtocol(asyncio.streams.FlowControlMixin):
    """Write-side protocol for a pipe or char device that also supports wait_closed()."""

    def __init__(self) -> None:
        super().__init__()
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        return self._closed


async def fd_streams(fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Wrap a char device (or pipe) fd opened O_RDWR as a reader/writer pair; takes the fd.
    Closing the writer closes both transports."""
    loop = asyncio.get_running_loop()
    wfd = os.dup(fd)  # each transport closes its own fd
    reader = asyncio.StreamReader(limit=STREAM_LIMIT)
    try:
        rtransport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), open(fd, "rb", buffering=0))
    except BaseException:
        os.close(wfd)
        raise
    try:
        wtransport, wproto = await loop.connect_write_pipe(
            _WriteProtocol, open(wfd, "wb", buffering=0))
    except BaseException:
        rtransport.close()
        raise
    writer = _PairedWriter(wtransport, wproto, reader, loop, rtransport)
    return reader, writer


class _PairedWriter(asyncio.StreamWriter):
    """A StreamWriter whose close() also closes the read transport of the same device."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: Any,
                 reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop,
                 read_transport: asyncio.ReadTransport) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._read_transport = read_transport

    def close(self) -> None:
        super().close()
        self._read_transport.close()
