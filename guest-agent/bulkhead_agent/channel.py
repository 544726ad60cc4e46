"""Opens the shim's two links (control, data): handshaken, then taken over as an asyncio
stream pair (control: ttrpc) or by a stdio link (data: the C engine or the Python pumps).

Either kind does the same handshake: once the host side is connected, the agent writes the magic,
and only then does the shim speak. virtio-serial needs it most: a port drops host data while
no guest process has it open, and reports POLLHUP while no host process is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from bulkhead_wire import channel_auth
from bulkhead_wire.channel_auth import AuthError
from bulkhead_wire.guest_abi import (
    CTL_PORT_NAME,
    DATA_PORT_NAME,
    HANDSHAKE_MAGIC,
    KEY_PORT_NAME,
    VSOCK_CTL_PORT,
    VSOCK_DATA_PORT,
)
from bulkhead_wire.stdio.engines import open_link
from bulkhead_wire.stdio.link import StreamLink
from bulkhead_wire.stdio.pump import wait_fd
from bulkhead_wire.stdio.python_link import fd_streams

from bulkhead_agent import log as agentlog
from bulkhead_agent.channel_key import KeyFile, KeyPort, KeySource

log = logging.getLogger(__name__)

VIRTIO_PORTS = "/sys/class/virtio-ports"
POLL_INTERVAL = 0.005  # seconds between checks while a port or its host side is missing
IDLE_POLL_INTERVAL = 0.1  # after FAST_POLL_PERIOD: nobody is about to connect, save guest CPU
SIGNALLED_POLL_INTERVAL = 2.0  # when the port sends SIGIO on host (dis)connects: a safety net
FAST_POLL_PERIOD = 2.0
SLOW_WARNING = 10.0  # seconds after which waiting for a port is worth a kernel log line
STREAM_LIMIT = 1 << 20
REJECT_DELAY = 0.5  # seconds before a port whose host failed the proof is opened again
KEY_FILE = "channel.key"  # a development agent's secret, in its listen dir


@dataclass
class Link:
    """One connected, handshaken link that nothing has read from yet: a virtio-serial port's
    fd or a socket. streams() or stdio_link() take it over; close() releases what is left."""

    name: str
    fd: int = -1  # a virtio-serial port (O_RDWR, non-blocking)
    sock: socket.socket | None = None  # a vsock or unix connection (non-blocking)
    closers: list[Callable[[], object]] = field(default_factory=list)

    async def handshake(self, role: str, keys: KeySource) -> None:
        """Tell the shim this end is open and reading (from here on nothing it sends is lost),
        then make it prove the VM's secret and prove it back; AuthError if it cannot."""
        key = await keys.get()
        nonce_a = channel_auth.new_nonce()
        await self._send(HANDSHAKE_MAGIC + nonce_a)
        proof = await asyncio.wait_for(self._receive(channel_auth.SHIM_PROOF_BYTES),
                                       channel_auth.AUTH_TIMEOUT)
        nonce_s = channel_auth.check_shim_proof(key, role, nonce_a, proof)
        await self._send(channel_auth.agent_proof(key, role, nonce_a, nonce_s))

    async def _send(self, data: bytes) -> None:
        if self.sock is not None:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await wait_fd(self.fd, writable=True)

    async def _receive(self, size: int) -> bytes:
        """Exactly size bytes (nothing after them is read); ConnectionError at EOF."""
        out = b""
        loop = asyncio.get_running_loop()
        while len(out) < size:
            if self.sock is not None:
                chunk = await loop.sock_recv(self.sock, size - len(out))
            else:
                try:
                    chunk = os.read(self.fd, size - len(out))
                except BlockingIOError:
                    await wait_fd(self.fd, writable=False)
                    continue
            if not chunk:
                raise ConnectionResetError(f"{self.name}: the host hung up in the handshake")
            out += chunk
        return out

    async def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Take the link over as a reader/writer pair (closed by close())."""
        if self.sock is not None:
            sock, self.sock = self.sock, None
            reader, writer = await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
        else:
            fd, self.fd = self.fd, -1
            reader, writer = await fd_streams(fd)
        self.closers.append(writer.close)
        return reader, writer

    async def stdio_link(self, engine: str) -> StreamLink:
        """Take the link over as the data channel's stdio link; its owner closes it."""
        channel: socket.socket | int = self.sock if self.sock is not None else self.fd
        self.sock, self.fd = None, -1
        return await open_link(channel, engine, self.name)

    def close(self) -> None:
        """Close what is still held (idempotent)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        for closer in self.closers:
            try:
                closer()
            except (OSError, RuntimeError) as exc:
                log.debug("%s: close: %s", self.name, exc)
        self.closers.clear()


def find_port(port_name: str, sysfs: str = VIRTIO_PORTS) -> str | None:
    """The /dev name (vportNpM) of the virtio-serial port called port_name, if it exists yet."""
    try:
        entries = os.listdir(sysfs)
    except FileNotFoundError:
        return None
    for entry in sorted(entries):
        try:
            with open(f"{sysfs}/{entry}/name") as f:
                if f.read().strip() == port_name:
                    return entry
        except OSError:
            continue
    return None


def host_connected(fd: int) -> bool:
    """False while the port reports POLLHUP, i.e. no host process has its side open."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return not any(ev & select.POLLHUP for _, ev in poller.poll(0))


class SerialPort:
    """A virtio-serial port found by name; reopened for every new host connection."""

    def __init__(self, port_name: str, role: str, keys: KeySource, sysfs: str = VIRTIO_PORTS,
                 dev: str = "/dev") -> None:
        self.name = port_name
        self.role = role
        self.keys = keys
        self.sysfs = sysfs
        self.dev = dev
        self.on_waiting: Callable[[str], None] | None = None  # told when idle for a host

    async def accept(self) -> Link:
        """Wait for the port and for a host side that proves the secret; return the link."""
        while True:
            link = await self._connect()
            if await _authenticated(link, self.role, self.keys):
                return link
            await asyncio.sleep(REJECT_DELAY)

    async def _connect(self) -> Link:
        """The port opened once its host side is there."""
        path = await self._wait_for_device()
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            wake = _sigio_wakeups(fd)
            if self.on_waiting is not None:
                self.on_waiting(self.name)
            await _poll_until(lambda: host_connected(fd), f"host side of {self.name}", wake)
        except BaseException:
            os.close(fd)
            raise
        return Link(self.name, fd=fd)

    async def device_entry(self) -> str:
        """The port's /dev entry name, once it exists (the key port's lookup)."""
        return os.path.basename(await self._wait_for_device())

    async def _wait_for_device(self) -> str:
        """Port names arrive from the host asynchronously after the device probes: poll."""
        found: list[str] = []

        def check() -> bool:
            entry = find_port(self.name, self.sysfs)
            if entry is not None:
                found.append(entry)
            return entry is not None

        await _poll_until(check, f"virtio-serial port {self.name}")
        return f"{self.dev}/{found[0]}"

    def close(self) -> None:
        """Nothing is held between connections."""


class SocketListener:
    """A listening vsock or unix socket; accepts one host connection at a time."""

    def __init__(self, sock: socket.socket, name: str, role: str, keys: KeySource) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self.role = role
        self.keys = keys
        self.on_waiting: Callable[[str], None] | None = None  # told when idle for a host

    @classmethod
    def vsock(cls, port: int, name: str, role: str, keys: KeySource) -> SocketListener:
        """Listen on AF_VSOCK, any CID, the given port."""
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.bind((socket.VMADDR_CID_ANY, port))
            sock.listen(1)
        except BaseException:
            sock.close()
            raise
        return cls(sock, name, role, keys)

    @classmethod
    def unix(cls, path: str, name: str, role: str, keys: KeySource) -> SocketListener:
        """Listen on a unix socket path (development on the host)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(1)
        except BaseException:
            sock.close()
            raise
        return cls(sock, name, role, keys)

    async def accept(self) -> Link:
        """Accept host connections until one proves the secret; return its link. Any local
        process may connect to a vsock port: the others are dropped and logged."""
        loop = asyncio.get_running_loop()
        if self.on_waiting is not None:
            self.on_waiting(self.name)
        while True:
            conn, peer = await loop.sock_accept(self.sock)
            if self.sock.family == socket.AF_VSOCK and peer[0] != socket.VMADDR_CID_HOST:
                # A container shares the VM's network, and vsock crosses no namespace: only
                # the host may become the agent's shim.
                log.warning("%s: refused a connection from CID %s (not the host)", self.name,
                            peer[0])
                conn.close()
                continue
            conn.setblocking(False)
            link = Link(self.name, sock=conn)
            if await _authenticated(link, self.role, self.keys):
                return link

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()


async def _authenticated(link: Link, role: str, keys: KeySource) -> bool:
    """Handshake on a new link: True if the host proved the secret; False (logged, the link
    closed) if it did not or hung up; anything else closes the link and propagates."""
    try:
        await link.handshake(role, keys)
    except (AuthError, TimeoutError, ConnectionError) as exc:
        link.close()
        log.warning("%s: dropped a host peer: %s", link.name, exc or "no proof in time")
        return False
    except BaseException:
        link.close()
        raise
    log.info("%s: host connected", link.name)
    return True


_sigio_event: asyncio.Event | None = None


def _sigio_wakeups(fd: int) -> asyncio.Event | None:
    """Ask the port for SIGIO when the host connects (virtio_console's fasync), so an idle
    agent, or one restored from a VM template, wakes at once instead of polling."""
    global _sigio_event
    import fcntl
    import signal

    try:
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    except OSError as exc:
        log.info("no SIGIO from the virtio-serial port (%s): polling", exc)
        return None
    if _sigio_event is None:
        event = _sigio_event = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGIO, event.set)
    return _sigio_event


async def _poll_until(ready: Callable[[], bool], what: str,
                      wake: asyncio.Event | None = None) -> None:
    """Wait until ready(), woken by `wake` (SIGIO) or by polling; say so once in the kernel
    log if it takes unusually long."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    warned = False
    while True:
        if wake is not None:
            wake.clear()  # before the check: a signal after it is never lost
        if ready():
            return
        waited = loop.time() - started
        if not warned and waited > SLOW_WARNING:
            warned = True
            log.warning("still waiting for %s after %.0f s", what, SLOW_WARNING)
            agentlog.kernel(f"still waiting for {what} after {SLOW_WARNING:.0f} s")
        interval = POLL_INTERVAL if waited < FAST_POLL_PERIOD else IDLE_POLL_INTERVAL
        if wake is None:
            await asyncio.sleep(interval)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), SIGNALLED_POLL_INTERVAL)


def endpoints(channel: str, listen_dir: str = "") -> tuple[SerialPort | SocketListener,
                                                           SerialPort | SocketListener]:
    """The (control, data) endpoints for a channel kind: serial, vsock or unix; a VM's take
    their secret from the key port, a development agent's from listen_dir/channel.key."""
    keys: KeySource
    if channel == "unix":
        keys = KeyFile(os.path.join(listen_dir, KEY_FILE))
        return (SocketListener.unix(os.path.join(listen_dir, "ctl.sock"), "unix ctl", "ctl",
                                    keys),
                SocketListener.unix(os.path.join(listen_dir, "data.sock"), "unix data", "data",
                                    keys))
    key_port = SerialPort(KEY_PORT_NAME, "key", KeyFile(""))
    keys = KeyPort(key_port.device_entry)
    if channel == "serial":
        return (SerialPort(CTL_PORT_NAME, "ctl", keys), SerialPort(DATA_PORT_NAME, "data", keys))
    if channel == "vsock":
        return (SocketListener.vsock(VSOCK_CTL_PORT, "vsock ctl", "ctl", keys),
                SocketListener.vsock(VSOCK_DATA_PORT, "vsock data", "data", keys))
    raise ValueError(f"unknown channel kind {channel!r}")
