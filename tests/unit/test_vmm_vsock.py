"""vhost-vsock helpers: CID reservation through the device ioctl, connect retries."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from bulkhead.vmm import vsock


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A plain file standing in for /dev/vhost-vsock (the ioctl is faked)."""
    dev = tmp_path / "vhost-vsock"
    dev.write_bytes(b"")
    return dev


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fake_ioctl(taken: set[int], calls: list[int],
               fail: int | None = None) -> Callable[[int, int, bytes], int]:
    """An ioctl that refuses CIDs in `taken` (EADDRINUSE), or every CID with `fail`."""
    def ioctl(fd: int, request: int, arg: bytes) -> int:
        assert request == vsock.VHOST_VSOCK_SET_GUEST_CID and len(arg) == 8
        cid = int.from_bytes(arg, "little")
        calls.append(cid)
        if fail is not None:
            raise OSError(fail, os.strerror(fail))
        if cid in taken:
            raise OSError(errno.EADDRINUSE, "in use")
        return 0
    return ioctl


def test_reserve_skips_cids_in_use(device: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    first = vsock.CID_MIN + 42
    second = vsock.CID_MIN + (42 + 7919) % vsock.CID_SPAN
    monkeypatch.setattr(vsock.fcntl, "ioctl", fake_ioctl({first, second}, calls))
    before = open_fds()
    res = vsock.reserve_cid(42, device=device)
    assert calls[:2] == [first, second] and res.cid == calls[2] and len(calls) == 3
    assert vsock.CID_MIN <= res.cid < vsock.CID_MIN + vsock.CID_SPAN
    assert open_fds() == before + 1
    res.close()
    res.close()
    assert open_fds() == before


def test_reserve_gives_up_without_leaking(device: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(vsock.fcntl, "ioctl", fake_ioctl(set(), calls, fail=errno.EADDRINUSE))
    before = open_fds()
    with pytest.raises(vsock.CIDUnavailable, match="no free guest CID"):
        vsock.reserve_cid(1, device=device, attempts=5)
    assert len(calls) == 5 and open_fds() == before
    monkeypatch.setattr(vsock.fcntl, "ioctl", fake_ioctl(set(), calls, fail=errno.ENOTTY))
    with pytest.raises(vsock.CIDUnavailable, match="set guest CID"):
        vsock.reserve_cid(1, device=device)
    assert open_fds() == before


def test_missing_device(tmp_path: Path) -> None:
    with pytest.raises(vsock.CIDUnavailable, match="nodev"):
        vsock.reserve_cid(1, device=tmp_path / "nodev")
    assert vsock.vsock_usable(tmp_path / "nodev") is False


def test_usable_device(device: Path) -> None:
    assert vsock.vsock_usable(device) is hasattr(socket, "AF_VSOCK")


def test_connect_retries_until_the_guest_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[tuple[int, int]] = []
    host, guest = socket.socketpair()

    async def dial(cid: int, port: int, timeout: float) -> socket.socket:
        attempts.append((cid, port))
        if len(attempts) == 1:
            raise OSError(errno.ECONNRESET, "guest not up")
        if len(attempts) == 2:
            raise TimeoutError()
        return host

    monkeypatch.setattr(vsock, "_dial_once", dial)

    async def main() -> None:
        sock = await vsock.connect(7, 1024)
        guest.sendall(b"BHAGENT1")
        assert await asyncio.get_running_loop().sock_recv(sock, 8) == b"BHAGENT1"
        sock.close()
    asyncio.run(main())
    guest.close()
    assert attempts == [(7, 1024)] * 3


def test_connect_gives_up_on_real_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    async def dial(cid: int, port: int, timeout: float) -> socket.socket:
        raise OSError(errno.EACCES, "denied")

    monkeypatch.setattr(vsock, "_dial_once", dial)
    with pytest.raises(PermissionError):
        asyncio.run(vsock.connect(7, 1025))
