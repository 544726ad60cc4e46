"""Agent links: virtio-serial port discovery and handshake (a pty stands in for the port),
socket listeners, and the stream wrappers they hand over."""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path

from bulkhead_agent.channel import (
    SerialPort,
    SocketListener,
    find_port,
    host_connected,
)
from bulkhead_wire.stdio.channel import MAGIC
from bulkhead_wire.stdio.python_link import fd_streams


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
        port = SerialPort("bulkhead.ctl", sysfs=str(sysfs), dev=str(dev))
        task = asyncio.ensure_future(port.accept())
        await asyncio.sleep(0.05)
        assert not task.done()  # no such port yet
        make_sysfs(tmp_path, {"vport1p1": "bulkhead.ctl"})
        link = await asyncio.wait_for(task, 5)
        try:
            loop = asyncio.get_running_loop()
            magic = await loop.run_in_executor(None, os.read, master, 64)
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

    async def client() -> bytes:
        reader, writer = await asyncio.open_unix_connection(path)
        magic = await reader.readexactly(len(MAGIC))
        writer.close()
        return magic

    async def run() -> None:
        listener = SocketListener.unix(path, "ctl")
        try:
            for _ in range(2):
                accepted = asyncio.ensure_future(listener.accept())
                assert await client() == MAGIC
                link = await asyncio.wait_for(accepted, 5)
                reader, _ = await link.streams()
                assert await asyncio.wait_for(reader.read(), 5) == b""
                link.close()
        finally:
            listener.close()

    asyncio.run(run())
