"""One-time process and machine setup for the agent as PID 1 (and the few bits a dev run needs)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
LINUX_REBOOT_CMD_RESTART = 0x01234567


def ensure_std_fds() -> None:
    """Make sure fds 0-2 are open, so no pipe we create can land on them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def ignore_sigpipe() -> None:
    """A vanished reader must surface as EPIPE in the pumps, never kill the agent."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def set_subreaper() -> None:
    """Adopt orphaned descendants (container inits after crun exits) when not PID 1."""
    import ctypes  # lazy: costs start-up time and PID 1 does not need it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def loopback_up(name: str = "lo") -> None:
    """Bring an interface up with SIOCSIFFLAGS (no `ip` in the guest image)."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH14x", name.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(),
                                                                flags | IFF_UP))


def power_off(restart: bool = False) -> None:
    """Sync and power the VM off (or restart it, for VMMs without a power-off device)."""
    import ctypes  # lazy: only needed once, at the very end

    os.sync()
    cmd = LINUX_REBOOT_CMD_RESTART if restart else LINUX_REBOOT_CMD_POWER_OFF
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(ctypes.c_int(cmd))
    err = ctypes.get_errno()
    log.error("reboot(%#x) failed: %s; trying sysrq", cmd, os.strerror(err))
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("b" if restart else "o")
