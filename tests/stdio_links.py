"""Test helpers: two stdio links joined by a socketpair, for every pair of engines, and a
stream collected into bytes through a real pipe."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
from bulkhead_wire.stdio.channel import WINDOW
from bulkhead_wire.stdio.engines import c_engine_available, open_link
from bulkhead_wire.stdio.link import StreamLink

NEEDS_C = pytest.mark.skipif(not c_engine_available(),
                             reason="bulkhead_wire._copyengine is not built")
ENGINES = [pytest.param("c", marks=NEEDS_C), "python"]
# (sender's engine, receiver's engine): both ends speak the same wire format.
ENGINE_PAIRS = [pytest.param((a, b), id=f"{a}-{b}", marks=[NEEDS_C] if "c" in (a, b) else [])
                for a in ("c", "python") for b in ("c", "python")]


@contextlib.asynccontextmanager
async def link_pair(left: str, right: str, window: int = WINDOW
                    ) -> AsyncIterator[tuple[StreamLink, StreamLink]]:
    """Two links (engines `left` and `right`) on the two ends of a socketpair."""
    a, b = socket.socketpair()
    la = await open_link(a, left, "left", window)
    lb = await open_link(b, right, "right", window)
    try:
        yield la, lb
    finally:
        await la.close()
        await lb.close()


def nonblocking_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


async def read_fd_to_eof(fd: int) -> bytes:
    """Everything a non-blocking fd yields until EOF (the fd is closed afterwards)."""
    from bulkhead_wire.stdio.pump import read_fd

    out = bytearray()
    try:
        while chunk := await read_fd(fd):
            out += chunk
    finally:
        os.close(fd)
    return bytes(out)


def collect(link: StreamLink, stream: int) -> asyncio.Task[bytes]:
    """Register `stream` on link (into a pipe) and gather what arrives until its EOF."""
    r, w = nonblocking_pipe()
    link.receive_into(stream, w)
    os.close(w)  # the link holds its own dup: EOF once the stream ends
    return asyncio.ensure_future(read_fd_to_eof(r))
