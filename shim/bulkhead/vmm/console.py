"""The guest's serial console, kept as a ring of two files (console.log and console.log.1):
QEMU writes into a socket the shim drains on its event loop, so a chatty guest never fills
the state directory's tmpfs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

CAP_BYTES = 1 << 20  # per file: at most twice this of console is kept
OLDER_SUFFIX = ".1"
READ_SIZE = 65536


class ConsoleRing:
    """Reads QEMU's end of the console and appends to `path`, rotating it at `cap` bytes."""

    def __init__(self, path: Path, cap: int = CAP_BYTES) -> None:
        self.path, self.cap = path, cap
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.qemu_fd = theirs.detach()  # inherited by QEMU (chardev socket,fd=N)
        self._ours.setblocking(False)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Drain on the running loop; call once QEMU holds its copy (release_qemu_fd)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ours.fileno(), self._drain)

    def release_qemu_fd(self) -> None:
        """Close the parent's copy of QEMU's end, so QEMU's exit reads as EOF here."""
        if self.qemu_fd >= 0:
            os.close(self.qemu_fd)
            self.qemu_fd = -1

    def flush(self) -> None:
        """Take what is waiting in the socket now (before reading the files)."""
        self._drain()

    def close(self) -> None:
        """Take what QEMU left in the socket, then close everything (idempotent)."""
        if self._fd < 0:
            return
        self._drain()
        self._stop_reading()
        self._ours.close()
        self.release_qemu_fd()
        os.close(self._fd)
        self._fd = -1

    def _drain(self) -> None:
        while self._fd >= 0:
            try:
                data = self._ours.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # QEMU is gone: nothing more will come
                self._stop_reading()
                return
            self._append(data)

    def _stop_reading(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.remove_reader(self._ours.fileno())

    def _append(self, data: bytes) -> None:
        if self._size + len(data) > self.cap and self._size > 0:
            os.close(self._fd)
            os.replace(self.path, str(self.path) + OLDER_SUFFIX)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                               0o600)
            self._size = 0
        os.write(self._fd, data)
        self._size += len(data)


def ring_files(path: Path) -> list[Path]:
    """A ring's files, oldest first (those that exist): this console's, or the shim's log
    (logging's RotatingFileHandler with one backup uses the same names)."""
    return [p for p in (Path(str(path) + OLDER_SUFFIX), path) if p.exists()]


def read_ring(path: Path, max_bytes: int = 2 * CAP_BYTES) -> bytes:
    """The last max_bytes of a ring, across both of its files."""
    data = b""
    for file in ring_files(path):
        with contextlib.suppress(OSError):
            data += file.read_bytes()
    return data[-max_bytes:]
