"""`bulkhead shell`: a root shell on a pty in the VM itself, outside every container, served
on the virtio-serial port "bulkhead.debug" when the host's debug_shell setting is on.

The protocol (bulkhead_wire.debug_shell): a header line starts a session, resize lines set
the pty's size, an exit line with the shell's status ends it. The port stays open between
sessions; a header during a session means its host left and a new one came.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pty
import signal
import struct
import termios
from dataclasses import dataclass, field
from typing import Any

from bulkhead_wire import debug_shell as protocol
from bulkhead_wire.debug_shell import Line, LineScanner
from bulkhead_wire.guest_abi import DEBUG_PORT_NAME

from bulkhead_agent.channel import find_port, host_connected
from bulkhead_agent.reaper import ExitInfo, Reaper
from bulkhead_agent.spawn import child_env

log = logging.getLogger(__name__)

SHELL = "/bin/sh"
CHUNK = 65536
HANGUP_GRACE = 2.0  # seconds a shell gets after SIGHUP before SIGKILL
HOST_AWAY_POLL = 0.2  # seconds between looks while no host is connected


@dataclass
class Port:
    """The debug port and what was read from it but not yet used."""

    fd: int
    scanner: LineScanner = field(default_factory=lambda: LineScanner(protocol.CONTROL_PREFIX))
    next_header: dict[str, object] | None = None


class DebugShell:
    """Serves one session at a time, for as long as the agent runs."""

    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Idempotent: SetupSandbox may come again after a host reconnect."""
        if self._task is None:
            self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        port = Port(await _open_port())
        while True:
            try:
                header = port.next_header or await _next_header(port)
                port.next_header = None
                await self._session(port, header)
            except Exception as exc:  # a bad header, a failed spawn: wait for the next one
                log.warning("debug shell session failed: %s", exc)

    async def _session(self, port: Port, header: dict[str, object]) -> None:
        master, slave = pty.openpty()
        try:
            _set_size(master, _number(header, "rows", 24), _number(header, "cols", 80))
            pid = _spawn_shell(os.ttyname(slave), str(header.get("command") or ""),
                               str(header.get("term") or "xterm"))
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        exited = self.reaper.watch(pid)
        log.info("debug shell pid %d started", pid)
        try:
            await _relay(port, master, exited)
            status = await _end(pid, exited)
            if port.next_header is None:  # else the output's host is gone, a new one waits
                _write_quietly(port.fd, _drain(master) + protocol.exit_line(status))
        finally:
            if not exited.done():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            os.close(master)
        log.info("debug shell pid %d exited with %d", pid, status)


def _spawn_shell(tty: str, command: str, term: str) -> int:
    """The shell leads a new session whose controlling terminal is the pty (opened after
    setsid, without O_NOCTTY)."""
    argv = [SHELL, "-c", command] if command else [SHELL, "-l"]
    env = child_env({"TERM": term, "HOME": "/root", "PS1": "bulkhead-vm# "})
    actions = [(os.POSIX_SPAWN_OPEN, 0, tty, os.O_RDWR, 0), (os.POSIX_SPAWN_DUP2, 0, 1),
               (os.POSIX_SPAWN_DUP2, 0, 2)]
    return os.posix_spawn(SHELL, argv, env, file_actions=actions, setsid=True,
                          setsigdef=(signal.SIGPIPE, signal.SIGINT, signal.SIGQUIT),
                          setsigmask=())


async def _end(pid: int, exited: asyncio.Future[ExitInfo]) -> int:
    """The shell's status; one its host left is hung up on, as a terminal would."""
    if not exited.done():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGHUP)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), HANGUP_GRACE)
    if not exited.done():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return (await exited).status


def _number(header: dict[str, object], key: str, default: int) -> int:
    value = header.get(key)
    return value if isinstance(value, int) and 0 < value < 10000 else default


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _next_header(port: Port) -> dict[str, object]:
    """Wait for a session header; anything else between sessions is dropped."""
    while True:
        for part in port.scanner.feed(await _read(port.fd)):
            if isinstance(part, Line):
                header = protocol.parse_header(part.body)
                if header is not None:
                    return header


async def _open_port() -> int:
    """The port's device, once the kernel named it (it is there right after boot)."""
    while (entry := find_port(DEBUG_PORT_NAME)) is None:
        await asyncio.sleep(HOST_AWAY_POLL)
    return os.open(f"/dev/{entry}", os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)


async def _relay(port: Port, master: int, exited: asyncio.Future[ExitInfo]) -> None:
    """Port to pty and pty to port until the shell ends, its host leaves or a new one comes."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def from_host() -> None:
        try:
            data = os.read(port.fd, CHUNK)
        except BlockingIOError:
            return
        if not data or not host_connected(port.fd):
            _finish(done)
            return
        for part in port.scanner.feed(data):
            if not isinstance(part, Line):
                os.write(master, part)  # a pty takes small writes at once
            elif (size := protocol.parse_size(part.body)) is not None:
                _set_size(master, *size)
            elif (header := protocol.parse_header(part.body)) is not None:
                port.next_header = header  # a new host: this session is over
                _finish(done)
                return

    def to_host() -> None:
        try:
            data = os.read(master, CHUNK)
        except OSError:  # EIO: every holder of the pty's slave is gone
            data = b""
        if not data:
            _finish(done)
            return
        try:
            _write_blocking(port.fd, data)
        except OSError:  # the host left while we wrote
            _finish(done)

    os.set_blocking(master, False)
    loop.add_reader(port.fd, from_host)
    loop.add_reader(master, to_host)
    try:
        waiters: list[asyncio.Future[Any]] = [done, exited]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(port.fd)
        loop.remove_reader(master)


def _drain(master: int) -> bytes:
    """What the shell wrote just before it exited and the relay has not sent yet."""
    out = b""
    while True:
        try:
            data = os.read(master, CHUNK)
        except OSError:  # EAGAIN, or EIO once the slave is closed everywhere
            return out
        if not data:
            return out
        out += data


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def _read(fd: int) -> bytes:
    """Some bytes from the host; while no host is connected the port reads as EOF: wait."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _finish, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            continue
        if data:
            return data
        await asyncio.sleep(HOST_AWAY_POLL)


def _write_blocking(fd: int, data: bytes) -> None:
    """Terminal output is small: a blocking write keeps the order without a queue."""
    os.set_blocking(fd, True)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.set_blocking(fd, False)


def _write_quietly(fd: int, data: bytes) -> None:
    """The session's last bytes; a host that already left does not get them."""
    with contextlib.suppress(OSError):
        _write_blocking(fd, data)
