"""Agent links: virtio-serial port discovery and handshake (a pty stands in for the port),
socket listeners, and the stream wrappers they hand over."""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path

import pytest
from agent_auth import prove
from bulkhead_agent.channel import (
    SerialPort,
    SocketListener,
    find_port,
    host_connected,
)
from bulkhead_wire import channel_auth
from bulkhead_wire.guest_abi import HANDSHAKE_MAGIC as MAGIC
from bulkhead_wire.stdio.python_link import fd_streams

KEY = b"k" * channel_auth.KEY_BYTES


class FixedKey:
    """A key source that always has KEY."""

    async def get(self) -> bytes:
        return KEY


def make_sysfs(tmp_path: Path, ports: dict[str, str]) -> Path:
    sysfs = tmp_path / "virtio-ports"
    for entry, name in ports.items():
        (sysfs / entry).mkdir(parents=True)
        (sysfs / entry / "name").write_text(name + "\n")
    return sysfs


def test_find_port_by_name(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"vport0p1": "bulkhead.ctl", "vport0p2": "bulkhead.data"})
    (sysfs / "vport0p3").mkdir()  # a port whose name has not arrived yet
    assert find_port("bulkhead.data", str(sysfs)) == "vport0p2"
    assert find_port("other", str(sysfs)) is None
    assert find_port("bulkhead.ctl", str(tmp_path / "absent")) is None


def test_host_connected_follows_pollhup() -> None:
    master, slave = os.openpty()
    try:
        assert host_connected(slave)
        os.close(master)
        master = -1
        assert not host_connected(slave)  # the "host" side went away: POLLHUP
    finally:
        os.close(slave)
        if master >= 0:
            os.close(master)


def test_serial_port_waits_for_the_name_then_handshakes(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    sysfs = tmp_path / "virtio-ports"
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "vport1p1").symlink_to(os.ttyname(slave))

    async def run() -> bytes:
        port = SerialPort("bulkhead.ctl", "ctl", FixedKey(), sysfs=str(sysfs), dev=str(dev))
        task = asyncio.ensure_future(port.accept())
        await asyncio.sleep(0.05)
        assert not task.done()  # no such port yet
        make_sysfs(tmp_path, {"vport1p1": "bulkhead.ctl"})
        loop = asyncio.get_running_loop()
        hello = b""
        while len(hello) < len(MAGIC) + channel_auth.NONCE_BYTES:
            hello += await loop.run_in_executor(None, os.read, master, 64)
        nonce_a = hello[len(MAGIC):]
        nonce_s, proof = channel_auth.shim_proof(KEY, "ctl", nonce_a)
        os.write(master, proof)
        answer = await loop.run_in_executor(None, os.read, master, 64)
        channel_auth.check_agent_proof(KEY, "ctl", nonce_a, nonce_s, answer)
        link = await asyncio.wait_for(task, 5)
        try:
            magic = hello[:len(MAGIC)]
            os.write(master, b"ping")
            reader, writer = await link.streams()
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            writer.write(b"pong")
            await writer.drain()
            assert await loop.run_in_executor(None, os.read, master, 64) == b"pong"
        finally:
            link.close()
            link.close()  # idempotent
        return magic

    try:
        assert asyncio.run(run()) == MAGIC
    finally:
        os.close(master)
        os.close(slave)


def test_fd_streams_on_a_char_device_see_hangup_and_close_cleanly() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await fd_streams(os.dup(slave))
        os.write(master, b"abc")
        assert await asyncio.wait_for(reader.readexactly(3), 5) == b"abc"
        writer.write(b"xyz")
        await writer.drain()
        assert await loop.run_in_executor(None, os.read, master, 3) == b"xyz"
        os.close(master)  # host gone: a pty says EIO where virtio-serial says EOF
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except OSError:
            pass
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)

    try:
        asyncio.run(run())
    finally:
        os.close(slave)


def test_unix_listener_accepts_again_after_a_disconnect(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")

    async def client(key: bytes) -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            await prove(reader, writer, key, "ctl")
        finally:
            writer.close()

    async def run() -> None:
        listener = SocketListener.unix(path, "ctl", "ctl", FixedKey())
        try:
            for _ in range(2):
                accepted = asyncio.ensure_future(listener.accept())
                # A peer without the secret is dropped; the listener waits for the next one.
                with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                    await client(b"x" * channel_auth.KEY_BYTES)
                assert not accepted.done()
                await client(KEY)
                link = await asyncio.wait_for(accepted, 5)
                reader, _ = await link.streams()
                assert await asyncio.wait_for(reader.read(), 5) == b""
                link.close()
        finally:
            listener.close()

    asyncio.run(run())


def test_key_port_asks_the_host_at_every_connection() -> None:
    """The agent asks the key port for the secret at each new host connection, so a VM cloned
    from a template takes its own shim's secret, never the one the template saw."""
    from bulkhead_agent.channel_key import KeyPort

    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    first, second = b"1" * channel_auth.KEY_BYTES, b"2" * channel_auth.KEY_BYTES

    async def entry() -> str:
        return os.path.basename(os.ttyname(slave))

    async def run() -> list[bytes]:
        loop = asyncio.get_running_loop()
        port = KeyPort(entry, dev="/dev/pts")
        got = []
        for key in (first, second):
            task = asyncio.ensure_future(port.get())
            ask = await loop.run_in_executor(None, os.read, master, 64)
            assert ask == channel_auth.KEY_REQUEST
            os.write(master, key)
            got.append(await asyncio.wait_for(task, 5))
        return got

    try:
        assert asyncio.run(run()) == [first, second]
    finally:
        os.close(master)
        os.close(slave)
