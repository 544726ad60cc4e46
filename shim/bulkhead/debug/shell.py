"""`bulkhead shell SANDBOX`: a root shell in the sandbox's VM, outside every container, for
debugging the guest itself (agent, mounts, cgroups, network). Root only, and only where the
sandbox was started with `debug_shell = true`: QEMU then listens on debug.sock for the
guest's debug port (guest-agent/bulkhead_agent/debug_shell.py speaks the other end).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import sys
import termios
import tty
from pathlib import Path

from bulkhead_wire import debug_shell as protocol
from bulkhead_wire.debug_shell import Line, LineScanner

from bulkhead.debug import target
from bulkhead.vmm.base import DEBUG_SOCKET

CHUNK = 65536


class ShellError(Exception):
    """The shell cannot be had: not root, switched off, or the VM is gone."""


def build_parser(parser: argparse.ArgumentParser) -> None:
    target.add_arguments(parser)
    parser.add_argument("-c", "--command", dest="shell_command", default="",
                        help="run this shell command instead of an interactive shell")


def run(args: argparse.Namespace) -> int:
    try:
        sock = connect(args.sandbox, args.namespace)
    except (target.TargetError, ShellError) as exc:
        print(f"bulkhead shell: {exc}", file=sys.stderr)
        return 1
    with sock:
        return session(sock, args.shell_command)


def connect(sandbox_id: str, namespace: str = "") -> socket.socket:
    """The debug port's socket of a live sandbox, or ShellError saying why not."""
    if os.geteuid() != 0:
        raise ShellError("only root may open a shell in a sandbox VM")
    found = target.find(sandbox_id, namespace)
    path = Path(found.path) / DEBUG_SOCKET
    if not found.shim_alive or not found.vm_pid:
        raise ShellError(f"sandbox {found.namespace}/{found.sandbox_id} has no running VM")
    if not path.exists():
        raise ShellError(f"the debug shell is off for sandbox {found.namespace}/"
                         f"{found.sandbox_id}: set debug_shell = true in "
                         "/etc/bulkhead/config.toml (or the pod's runtime config); it applies "
                         "to sandboxes started after that")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise ShellError(f"connect {path}: {exc.strerror}") from None
    return sock


def session(sock: socket.socket, command: str) -> int:
    """Send the header, relay the terminal both ways, return the shell's exit status."""
    interactive = not command and os.isatty(0)
    rows, cols = _size()
    sock.sendall(protocol.header(rows, cols, os.environ.get("TERM", "xterm"), command))
    saved = termios.tcgetattr(0) if interactive else None
    try:
        if interactive:
            tty.setraw(0)
        return _relay(sock, stdin_open=not command)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _size() -> tuple[int, int]:
    """The terminal's own size (not $LINES/$COLUMNS, which go stale on a resize)."""
    for fd in (0, 1):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            if size.lines and size.columns:
                return size.lines, size.columns
    return 24, 80


def _relay(sock: socket.socket, stdin_open: bool) -> int:
    """Until the exit line; a window change is passed on as a resize line (SIGWINCH)."""
    scanner = LineScanner(protocol.CONTROL_PREFIX)
    winch_r, winch_w = os.pipe()
    os.set_blocking(winch_r, False)
    os.set_blocking(winch_w, False)
    previous = signal.signal(signal.SIGWINCH, lambda *_: _poke(winch_w))
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(winch_r, selectors.EVENT_READ)
    if stdin_open:
        sel.register(0, selectors.EVENT_READ)
    try:
        while True:
            events = sel.select()
            # A resize before any key typed after it: the handler ran when select returned.
            with contextlib.suppress(BlockingIOError):
                if os.read(winch_r, 64):
                    sock.sendall(protocol.resize(*_size()))
            for key, _ in events:
                if key.fileobj is sock:
                    status = _from_guest(sock, scanner)
                    if status is not None:
                        return status
                elif key.fileobj == 0 and not _to_guest(sock):
                    sel.unregister(0)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        sel.close()
        os.close(winch_r)
        os.close(winch_w)


def _from_guest(sock: socket.socket, scanner: LineScanner) -> int | None:
    data = sock.recv(CHUNK)
    if not data:
        raise SystemExit("bulkhead shell: the VM closed the debug port")
    for part in scanner.feed(data):
        if not isinstance(part, Line):
            sys.stdout.buffer.write(part)
        elif (status := protocol.parse_exit(part.body)) is not None:
            sys.stdout.buffer.flush()
            return status
    sys.stdout.buffer.flush()
    return None


def _to_guest(sock: socket.socket) -> bool:
    """Pass the user's keys on; False at the end of stdin (after passing on an EOF key)."""
    data = os.read(0, CHUNK)
    if not data:
        with contextlib.suppress(OSError):
            sock.sendall(b"\x04")  # ^D on the pty: the shell's stdin ends
        return False
    sock.sendall(data)
    return True


def _poke(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.write(fd, b"w")
