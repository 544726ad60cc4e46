"""vhost-vsock helpers: detect the device, reserve a guest CID, dial the agent inside the guest.

A CID is reserved by opening /dev/vhost-vsock ourselves and setting the CID on that fd; the kernel
refuses a CID another VM holds (EADDRINUSE), so there is no race and no lock file to clean up. The
fd is handed to QEMU (vhostfd=) and the reservation lives exactly as long as QEMU.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

VHOST_VSOCK_DEVICE = Path("/dev/vhost-vsock")
# _IOW(VHOST_VIRTIO=0xAF, 0x60, __u64)
VHOST_VSOCK_SET_GUEST_CID = 0x4008AF60
CID_MIN = 3
CID_SPAN = 1 << 20  # candidates are drawn from [CID_MIN, CID_MIN + CID_SPAN)
_RETRYABLE = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ENODEV, errno.ETIMEDOUT,
              errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN}


class CIDUnavailable(OSError):
    """No guest CID could be reserved on /dev/vhost-vsock."""


@dataclass
class CIDReservation:
    """An open /dev/vhost-vsock fd with its guest CID set; pass fd to QEMU, then close it."""

    cid: int
    fd: int

    def close(self) -> None:
        """Drop our copy of the fd (QEMU's copy keeps the reservation alive)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def vsock_usable(device: Path = VHOST_VSOCK_DEVICE) -> bool:
    """True if /dev/vhost-vsock opens read-write and the host has AF_VSOCK sockets."""
    if not hasattr(socket, "AF_VSOCK"):
        return False
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def reserve_cid(seed: int, device: Path = VHOST_VSOCK_DEVICE, attempts: int = 64) -> CIDReservation:
    """Open the vhost-vsock device and claim a free CID, starting from one derived from seed."""
    try:
        fd = os.open(device, os.O_RDWR)  # inherited by QEMU through pass_fds only
    except OSError as exc:
        raise CIDUnavailable(exc.errno, f"open {device} to reserve a guest CID: {exc.strerror}"
                             ) from exc
    start = seed % CID_SPAN
    for i in range(attempts):
        cid = CID_MIN + (start + i * 7919) % CID_SPAN
        try:
            fcntl.ioctl(fd, VHOST_VSOCK_SET_GUEST_CID, struct.pack("=Q", cid))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            os.close(fd)
            raise CIDUnavailable(exc.errno, f"set guest CID {cid} on {device}: {exc.strerror}"
                                 ) from exc
        return CIDReservation(cid=cid, fd=fd)
    os.close(fd)
    raise CIDUnavailable(errno.EADDRINUSE, f"no free guest CID on {device} after {attempts} tries")


async def connect(cid: int, port: int, attempt_timeout: float = 1.0) -> socket.socket:
    """Dial cid:port until the guest listens (a connected non-blocking socket); the caller
    bounds the whole wait."""
    delay = 0.01
    while True:
        try:
            sock = await _dial_once(cid, port, attempt_timeout)
        except OSError as exc:  # TimeoutError included: that attempt took too long
            if exc.errno is not None and exc.errno not in _RETRYABLE:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
            continue
        return sock


async def _dial_once(cid: int, port: int, timeout: float) -> socket.socket:
    """One non-blocking AF_VSOCK connect attempt; the socket is closed unless it connected."""
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (cid, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock
