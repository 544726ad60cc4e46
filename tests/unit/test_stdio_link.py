"""The stdio link with every pair of engines (C or Python at either end): bytes, EOF, credits,
sinks that go away, cancelled streams, and a peer that breaks the framing."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import struct

import pytest
from bulkhead_wire.stdio.engines import open_link
from stdio_links import ENGINE_PAIRS, ENGINES, collect, link_pair, nonblocking_pipe

HEADER = struct.Struct(">IBI")


async def produce(fd: int, payload: bytes) -> None:
    """Write payload into a non-blocking pipe, then close it."""
    loop = asyncio.get_running_loop()
    view = memoryview(payload)
    while view:
        try:
            view = view[os.write(fd, view[:65536]):]
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
    os.close(fd)


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
def test_streams_keep_every_byte_through_a_small_window(engines: tuple[str, str]) -> None:
    """4 MiB on each of three interleaved streams through a 64 KiB window."""
    payloads = {s: os.urandom(4 << 20) for s in (3, 5, 7)}

    async def run() -> dict[int, str]:
        async with link_pair(*engines, window=64 * 1024) as (sender, receiver):
            got = {s: collect(receiver, s) for s in payloads}
            writers = []
            for stream, payload in payloads.items():
                r, w = nonblocking_pipe()
                sender.send_from(stream, r)
                os.close(r)
                writers.append(produce(w, payload))
            await asyncio.wait_for(asyncio.gather(*writers), 30)
            return {s: hashlib.sha256(await asyncio.wait_for(t, 30)).hexdigest()
                    for s, t in got.items()}

    want = {s: hashlib.sha256(p).hexdigest() for s, p in payloads.items()}
    assert asyncio.run(run()) == want


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
def test_a_sink_that_went_away_never_stalls_the_sender(engines: tuple[str, str]) -> None:
    async def run() -> None:
        async with link_pair(*engines, window=64 * 1024) as (sender, receiver):
            r_sink, w_sink = nonblocking_pipe()
            sink = receiver.receive_into(1, w_sink)
            os.close(w_sink)
            os.close(r_sink)  # the reader is gone: EPIPE, the rest is dropped
            r, w = nonblocking_pipe()
            source = sender.send_from(1, r)
            os.close(r)
            await asyncio.wait_for(produce(w, b"z" * (1 << 20)), 10)
            await asyncio.wait_for(asyncio.gather(source.wait(), sink.wait()), 10)
            assert source.progress.done == 1 << 20 and sink.progress.done == 1 << 20

    asyncio.run(run())


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
def test_a_cancelled_output_still_ends_with_eof(engines: tuple[str, str]) -> None:
    async def run() -> None:
        async with link_pair(*engines) as (sender, receiver):
            got = collect(receiver, 9)
            r, w = nonblocking_pipe()
            pump = sender.send_from(9, r)
            os.close(r)
            pump.cancel()  # before it ever ran, the writer still open
            assert await asyncio.wait_for(got, 5) == b""
            os.close(w)

    asyncio.run(run())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("frame,reason", [
    (HEADER.pack(1, 1, 70000), "70000"),  # DATA longer than a chunk
    (HEADER.pack(1, 9, 0), "kind 9"),  # unknown kind
    (HEADER.pack(1, 3, 4) + struct.pack(">I", 0xFFFFFFFF), ""),  # credit overflow
])
def test_a_malformed_frame_closes_the_link_with_a_logged_reason(
        engine: str, frame: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    """The link closes (its streams end, nothing hangs) and the log says why."""
    async def run() -> None:
        ours, peer = socket.socketpair()
        link = await open_link(ours, engine, "test")
        try:
            r, w = nonblocking_pipe()
            out = link.send_from(1, r)  # a credit overflow needs a stream to credit
            os.close(r)
            got = collect(link, 2)
            peer.sendall(frame)
            await asyncio.wait_for(link.closed_event.wait(), 5)
            assert await asyncio.wait_for(got, 5) == b""
            await asyncio.wait_for(out.wait(), 5)
            os.close(w)
        finally:
            await link.close()
            peer.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(run())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("data channel" in m and reason in m for m in errors), errors


@pytest.mark.parametrize("engine", ENGINES)
def test_a_truncated_frame_at_eof_closes_the_link(engine: str) -> None:
    async def run() -> None:
        ours, peer = socket.socketpair()
        link = await open_link(ours, engine, "test")
        try:
            got = collect(link, 1)
            peer.sendall(HEADER.pack(1, 1, 100) + b"short")
            peer.close()
            await asyncio.wait_for(link.closed_event.wait(), 5)
            assert await asyncio.wait_for(got, 5) == b""  # the partial frame is not delivered
        finally:
            await link.close()

    asyncio.run(run())
