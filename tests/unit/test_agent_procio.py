"""A process's stdio pipes and pumps: data and EOF reach the host, fds never leak."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from bulkhead_agent.procio import ProcessIO, Streams
from bulkhead_wire.stdio.channel import DataChannel


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def channels() -> tuple[DataChannel, DataChannel]:
    """(agent side, host side) over a socketpair."""
    a, b = socket.socketpair()
    agent = DataChannel(*await asyncio.open_connection(sock=a))
    host = DataChannel(*await asyncio.open_connection(sock=b))
    agent.start()
    host.start()
    return agent, host


async def drain(host: DataChannel, stream: int) -> bytes:
    out = bytearray()
    while chunk := await host.read(stream):
        out += chunk
        await host.grant(stream, len(chunk))
    return bytes(out)


def test_only_wanted_streams_get_pipes() -> None:
    io = ProcessIO.open(Streams(stdin=0, stdout=5, stderr=0))
    try:
        assert io.child[0] is None and io.child[2] is None
        assert io.child[1] is not None and io.stdout_fd is not None
        assert not os.get_blocking(io.stdout_fd) and os.get_blocking(io.child[1])
    finally:
        io.close()


def test_output_and_stdin_flow_then_fds_are_closed() -> None:
    async def run() -> None:
        agent, host = await channels()
        io = ProcessIO.open(Streams(stdin=1, stdout=2, stderr=4))
        child_in, child_out, child_err = io.child
        assert child_in is not None and child_out is not None and child_err is not None
        ours = [io.stdin_fd, io.stdout_fd, io.stderr_fd]
        stdin_reader = os.dup(child_in)  # what the container would read
        io.start(agent)
        os.write(child_out, b"out")
        os.write(child_err, b"err")
        io.close_child_ends()
        await host.send(1, b"in")
        await host.send_eof(1)
        await asyncio.wait_for(io.close_stdin(), 5)
        try:  # all data, then EOF: the agent's write end is closed
            assert os.read(stdin_reader, 100) == b"in"
            assert os.read(stdin_reader, 100) == b""
        finally:
            os.close(stdin_reader)
        out, err = await asyncio.gather(drain(host, 2), drain(host, 4))
        await asyncio.wait_for(io.wait_output(), 5)
        assert (out, err) == (b"out", b"err")
        assert not any(is_open(fd) for fd in ours if fd is not None)
        await agent.close()
        await host.close()

    asyncio.run(run())


@pytest.mark.parametrize("before_first_step", [True, False])
def test_close_cancels_pumps_and_releases_fds(before_first_step: bool) -> None:
    async def run() -> None:
        agent, host = await channels()
        io = ProcessIO.open(Streams(stdin=1, stdout=2, stderr=4))
        ours = [io.stdin_fd, io.stdout_fd, io.stderr_fd]
        io.start(agent)
        if not before_first_step:
            await asyncio.sleep(0.05)
        io.close()
        await asyncio.gather(*(p.task for p in io.output_pumps), *(p for p in [io.input_pump] if p),
                             return_exceptions=True)
        assert not any(is_open(fd) for fd in ours if fd is not None)
        await agent.close()
        await host.close()

    asyncio.run(run())
