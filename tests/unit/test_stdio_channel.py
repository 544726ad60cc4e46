"""The multiplexed data channel: ordering, EOF, credit backpressure, no loss."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest
from bulkhead_wire.stdio.channel import ChannelClosed, DataChannel
from bulkhead_wire.stdio.pump import pump_fd_to_stream, pump_stream_to_fd


async def linked(window: int) -> tuple[DataChannel, DataChannel]:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)
    left, right = DataChannel(ra, wa, window), DataChannel(rb, wb, window)
    left.start()
    right.start()
    return left, right


def nonblocking_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


def test_pipe_to_pipe_through_channel_keeps_every_byte() -> None:
    """8 MiB through a 64 KiB window on two interleaved streams arrives intact."""
    payload = os.urandom(8 << 20)

    async def run() -> None:
        guest, host = await linked(window=64 * 1024)
        results = {}
        tasks = []
        for stream in (3, 5):
            host.inbound(stream)  # registered before the peer sends, as the links do
            src_r, src_w = nonblocking_pipe()
            dst_r, dst_w = nonblocking_pipe()
            tasks.append(asyncio.create_task(pump_fd_to_stream(guest, src_r, stream)))
            tasks.append(asyncio.create_task(pump_stream_to_fd(host, stream, dst_w)))

            async def produce(fd: int = src_w) -> None:
                view = memoryview(payload)
                while view:
                    try:
                        view = view[os.write(fd, view[:65536]):]
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
                os.close(fd)

            async def consume(fd: int = dst_r, key: int = stream) -> None:
                h, total = hashlib.sha256(), 0
                while total < len(payload):
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
                        continue
                    h.update(chunk)
                    total += len(chunk)
                results[key] = h.hexdigest()

            tasks.append(asyncio.create_task(produce()))
            tasks.append(asyncio.create_task(consume()))
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        want = hashlib.sha256(payload).hexdigest()
        assert results == {3: want, 5: want}
        await guest.close()
        await host.close()

    asyncio.run(run())


def test_sender_blocks_without_credit() -> None:
    async def run() -> None:
        a, b = await linked(window=1000)
        b.inbound(1)
        await a.send(1, b"x" * 1000)
        blocked = asyncio.create_task(a.send(1, b"y"))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        assert await b.read(1) == b"x" * 1000
        await b.grant(1, 1000)
        await asyncio.wait_for(blocked, 5)
        await a.send_eof(1)
        assert await b.read(1) == b"y"
        assert await b.read(1) == b""
        await a.close()
        await b.close()

    asyncio.run(run())


def test_closed_link_fails_senders_and_ends_readers() -> None:
    async def run() -> None:
        a, b = await linked(window=10)
        await a.send(1, b"0123456789")
        reader = asyncio.create_task(a.read(7))
        await b.close()
        assert await asyncio.wait_for(reader, 5) == b""
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(a.send(1, b"more"), 5)
        await a.close()

    asyncio.run(run())


def test_streams_the_peer_names_are_never_buffered() -> None:
    """A hostile peer naming 200 streams nobody opened gets nothing buffered (it once held
    200 MiB); a registered stream beside them still gets every byte."""
    async def run() -> None:
        guest, host = await linked(window=1 << 20)
        host.inbound(7)
        for stream in range(100, 300):
            await guest.send(stream, b"z" * (1 << 20))
            await guest.send_eof(stream)
        await guest.send(7, b"wanted")
        await guest.send_eof(7)
        assert await host.read(7) == b"wanted"
        assert await host.read(7) == b""
        assert host.dropped_frames == 200 * (16 + 1)  # 64 KiB chunks, and the EOF
        assert host.dropped_bytes == 200 << 20
        await guest.close()
        await host.close()

    asyncio.run(run())
