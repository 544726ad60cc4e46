"""Host stdio ends with real FIFOs, pipes and processes: stdin EOF, CloseIO, binary loggers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from bulkhead.stdio.binary_logger import BinaryLogger, LoggerError
from bulkhead.stdio.host import ProcessIO, StdioError
from bulkhead.stdio.stdin_fifo import StdinFifo
from bulkhead_wire.stdio.link import Pump
from bulkhead_wire.stdio.pump import hung_up
from stdio_links import ENGINE_PAIRS, collect, link_pair


def test_fifo_without_a_writer_yet_is_not_eof(tmp_path: Path) -> None:
    path = tmp_path / "stdin"
    os.mkfifo(path)
    fifo = StdinFifo.open(str(path))
    assert fifo is not None
    try:
        assert os.read(fifo.fd, 10) == b"" and not hung_up(fifo.fd)  # nobody connected yet
        writer = os.open(path, os.O_WRONLY)
        os.write(writer, b"x")
        os.close(writer)
        assert os.read(fifo.fd, 10) == b"x" and hung_up(fifo.fd)  # came and went: EOF
    finally:
        fifo.close()


async def forward_stdin(path: Path, engines: tuple[str, str],
                        client: Callable[[Pump, asyncio.Task[bytes]], Awaitable[None]]) -> bytes:
    """Send the stdin FIFO at path on a stream while `client` plays containerd's side."""
    async with link_pair(*engines) as (host, guest):
        fifo = StdinFifo.open(str(path))
        assert fifo is not None
        reader = collect(guest, 1)
        pump = host.send_from(1, fifo.fd)
        try:
            await client(pump, reader)
            data = await asyncio.wait_for(reader, 5)
            await asyncio.wait_for(pump.wait(), 5)
        finally:
            fifo.close()
    return data


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
def test_stdin_forwarded_until_the_client_closes_late(tmp_path: Path,
                                                      engines: tuple[str, str]) -> None:
    """The client opens its end only after we did, and never sends CloseIO (ctr's race)."""
    path = tmp_path / "stdin"
    os.mkfifo(path)

    async def client(pump: Pump, reader: asyncio.Task[bytes]) -> None:
        await asyncio.sleep(0.2)
        assert not reader.done()  # no writer yet: no premature EOF
        writer = os.open(path, os.O_WRONLY)
        os.write(writer, b"hello ")
        await asyncio.sleep(0.1)
        os.write(writer, b"world")
        os.close(writer)

    assert asyncio.run(forward_stdin(path, engines, client)) == b"hello world"


@pytest.mark.parametrize("engines", ENGINE_PAIRS)
def test_close_io_ends_stdin_while_the_client_keeps_its_end(tmp_path: Path,
                                                            engines: tuple[str, str]) -> None:
    path = tmp_path / "stdin"
    os.mkfifo(path)
    writers: list[int] = []

    async def client(pump: Pump, reader: asyncio.Task[bytes]) -> None:
        writers.append(os.open(path, os.O_WRONLY))
        os.write(writers[0], b"buffered")
        await asyncio.sleep(0.1)
        pump.close_output()  # CloseIO: what the FIFO holds is sent, then EOF

    try:
        assert asyncio.run(forward_stdin(path, engines, client)) == b"buffered"
    finally:
        for fd in writers:
            os.close(fd)


LOGGER = """#!/bin/sh
echo "$CONTAINER_ID $CONTAINER_NAMESPACE $*" > "$2"
exec 5>&-
cat <&3 >> "$2"
cat <&4 >> "$2"
"""


def test_binary_logger_contract(tmp_path: Path) -> None:
    script = tmp_path / "logger"
    script.write_text(LOGGER)
    script.chmod(0o755)
    out = tmp_path / "out.txt"

    async def run() -> None:
        logger = await BinaryLogger.start(f"binary://{script}?file={out}", "c1", "ns1")
        os.write(logger.stdout_fd, b"to stdout\n")
        os.write(logger.stderr_fd, b"to stderr\n")
        await logger.close()

    asyncio.run(run())
    assert out.read_text() == f"c1 ns1 file {out}\nto stdout\nto stderr\n"


@pytest.mark.parametrize("script,uri_scheme,why", [
    ("#!/bin/sh\nexit 1\n", "binary", "without signalling readiness"),
    ("#!/bin/sh\nexec 5>&-\nsleep 30\n", "binary-v2", "without signalling readiness"),
])
def test_binary_logger_that_never_gets_ready(tmp_path: Path, script: str, uri_scheme: str,
                                             why: str) -> None:
    path = tmp_path / "logger"
    path.write_text(script)
    path.chmod(0o755)

    async def run() -> None:
        with pytest.raises(LoggerError, match=why):
            await BinaryLogger.start(f"{uri_scheme}://{path}", "c1", "ns1")

    asyncio.run(run())


def test_process_io_errors_name_the_uri(tmp_path: Path) -> None:
    async def run() -> None:
        for uri, why in (("binary:///no/such/logger", "/no/such/logger"),
                         ("npipe://x", "not supported"),
                         (str(tmp_path / "missing-fifo"), "missing-fifo")):
            with pytest.raises(StdioError, match=why):
                await ProcessIO.open("", uri, uri, False, lambda: 1)
        with pytest.raises(StdioError, match="stdin FIFO"):
            await ProcessIO.open(str(tmp_path / "nope"), "", "", False, lambda: 1)

    asyncio.run(run())


def test_stdio_paths_must_be_fifos(tmp_path: Path) -> None:
    """A client's stdio path that is a host file, directory or device is refused, never opened:
    a stdin "FIFO" that is /etc/shadow would feed a host file to the container."""
    secret = tmp_path / "secret"
    secret.write_text("host only")
    (tmp_path / "link").symlink_to(secret)

    async def run() -> None:
        for path, kind in ((secret, "regular file"), (tmp_path, "directory"),
                           (Path("/dev/null"), "character device"),
                           (tmp_path / "link", "regular file")):
            with pytest.raises(StdioError, match=f"is a {kind}, not a FIFO"):
                await ProcessIO.open("", str(path), "", False, lambda: 1)
            with pytest.raises(StdioError, match=f"stdin FIFO: .* is a {kind}, not a FIFO"):
                await ProcessIO.open(str(path), "", "", False, lambda: 1)

    asyncio.run(run())
    assert secret.read_text() == "host only"


def test_terminal_never_opens_stderr(tmp_path: Path) -> None:
    out = tmp_path / "out"

    async def run() -> tuple[int, int, int]:
        io = await ProcessIO.open("", f"file://{out}", str(tmp_path / "no-stderr-fifo"), True,
                                  iter(range(1, 10)).__next__)
        ids = io.stream_ids
        await io.close()
        return ids

    assert asyncio.run(run()) == (0, 1, 0)
