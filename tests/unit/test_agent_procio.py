"""A process's stdio pipes and pumps: data and EOF reach the host, fds never leak, with either
engine at either end."""

from __future__ import annotations

import asyncio
import os

import pytest
from bulkhead_agent.procio import ProcessIO, Streams
from stdio_links import ENGINE_PAIRS, collect, link_pair, nonblocking_pipe


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_only_wanted_streams_get_pipes() -> None:
    io = ProcessIO.open(Streams(stdin=0, stdout=5, stderr=0))
    try:
        assert io.child[0] is None and io.child[2] is None
        assert io.child[1] is not None and io.stdout_fd is not None
        assert not os.get_blocking(io.stdout_fd) and os.get_blocking(io.child[1])
    finally:
        io.close()


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
def test_output_and_stdin_flow_then_fds_are_closed(engines: tuple[str, str]) -> None:
    async def run() -> None:
        async with link_pair(*engines) as (agent, host):
            before = open_fds()
            io = ProcessIO.open(Streams(stdin=1, stdout=2, stderr=4))
            child_in, child_out, child_err = io.child
            assert child_in is not None and child_out is not None and child_err is not None
            stdin_reader = os.dup(child_in)  # what the container would read
            out, err = collect(host, 2), collect(host, 4)
            io.start(agent)
            assert io.stdin_fd is io.stdout_fd is io.stderr_fd is None  # the link has dups
            os.write(child_out, b"out")
            os.write(child_err, b"err")
            io.close_child_ends()
            r, w = nonblocking_pipe()
            os.write(w, b"in")
            os.close(w)
            host.send_from(1, r)
            os.close(r)
            await asyncio.wait_for(io.close_stdin(), 5)
            try:  # all data, then EOF: every write end is closed
                assert os.read(stdin_reader, 100) == b"in"
                assert os.read(stdin_reader, 100) == b""
            finally:
                os.close(stdin_reader)
            assert await asyncio.wait_for(asyncio.gather(out, err), 5) == [b"out", b"err"]
            await asyncio.wait_for(io.wait_output(), 5)
            await asyncio.sleep(0.05)  # the host's sinks close their dups after EOF
            assert open_fds() <= before

    asyncio.run(run())


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
@pytest.mark.parametrize("before_first_step", [True, False])
def test_close_cancels_pumps_and_releases_fds(before_first_step: bool,
                                              engines: tuple[str, str]) -> None:
    async def run() -> None:
        async with link_pair(*engines) as (agent, host):
            before = open_fds()
            io = ProcessIO.open(Streams(stdin=1, stdout=2, stderr=4))
            out = collect(host, 2)
            io.start(agent)
            if not before_first_step:
                await asyncio.sleep(0.05)
            io.close()
            assert await asyncio.wait_for(out, 5) == b""  # the host still sees the EOF
            for pump in (*io.output_pumps, io.input_pump):
                assert pump is not None
                await asyncio.wait_for(pump.wait(), 5)
            await asyncio.sleep(0.05)
            assert open_fds() <= before

    asyncio.run(run())


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
def test_exit_mark_counts_only_what_the_process_wrote(engines: tuple[str, str]) -> None:
    """A child that outlives the process keeps the pipe open: the mark still says how much
    the process wrote (read so far plus still queued), and its bytes arrive without an EOF."""
    async def run() -> None:
        async with link_pair(*engines, window=64 * 1024) as (agent, host):
            io = ProcessIO.open(Streams(stdout=2))
            child_out = io.child[1]
            assert child_out is not None
            out = collect(host, 2)
            io.start(agent)
            os.write(child_out, b"x" * 50_000)
            survivor = os.dup(child_out)  # `cmd &` holding the same pipe
            io.close_child_ends()
            marks = io.exit_marks()
            assert marks == {2: 50_000}
            await asyncio.wait_for(io.wait_output(marks), 5)
            assert not out.done()  # no EOF while the survivor holds the pipe
            os.close(survivor)
            assert await asyncio.wait_for(out, 5) == b"x" * 50_000

    asyncio.run(run())
