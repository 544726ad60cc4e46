"""`delete`: crash-only cleanup of one task id after its removal or its shim's death.

Idempotent and scoped: a pod container only loses its own rootfs; a sandbox (or a lone
container) loses its daemon, VM, mounts, socket and state directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from bulkhead.paths import sandbox_dir
from bulkhead.sandbox.share import remove_container_dir, remove_state_dir
from bulkhead.sandbox.state import SandboxState, remove_empty_parent
from bulkhead.shim.flags import ShimArgs
from bulkhead.shim.grouping import (
    BundleError,
    read_annotations,
    sandbox_key,
    shim_listening,
    socket_path,
)

DAEMON_EXIT_GRACE = 2.0


def run(args: ShimArgs) -> bytes:
    """Clean up and return a serialized DeleteResponse (exit 137, now)."""
    bundle = args.bundle or os.getcwd()
    try:
        annotations = read_annotations(bundle)
    except BundleError:
        annotations = {}
    key, joins = sandbox_key(args.id, annotations)
    state_dir = sandbox_dir(args.namespace, key)
    if joins:
        cleanup_container(state_dir, args.id)
    else:
        cleanup_sandbox(state_dir, socket_path(args.address, args.namespace, key))
    return encode_delete_response(128 + signal.SIGKILL, time.time_ns())


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_delete_response(exit_status: int, exited_at_ns: int) -> bytes:
    """DeleteResponse{exit_status=2, exited_at=3 (Timestamp: seconds=1, nanos=2)}, written by
    hand: `delete` runs after every task removal, on containerd's path, and importing protobuf
    would be most of its run time."""
    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    stamp = b"\x08" + _varint(seconds) + (b"\x10" + _varint(nanos) if nanos else b"")
    return b"\x10" + _varint(exit_status) + b"\x1a" + _varint(len(stamp)) + stamp


def cleanup_container(state_dir: str, container_id: str) -> None:
    """Unmount and remove one container's part of the shared directory (following nothing)."""
    for what in remove_container_dir(state_dir, container_id):
        print(f"bulkhead delete: {what} left in place", file=sys.stderr)


def cleanup_sandbox(state_dir: str, sock: str) -> None:
    """Stop whatever of the sandbox still runs and remove every trace of it."""
    state = SandboxState.load(state_dir)
    if state is not None:
        _stop_daemon(state.shim_pid, state.sandbox_id)
    if os.path.isdir(state_dir):
        from bulkhead.vmm.base import kill_stale

        kill_stale(Path(state_dir))
    if state is not None and state.host_cgroups:
        from bulkhead.sandbox.host_cgroup import remove

        for path in remove(state.host_cgroups):
            print(f"bulkhead delete: host cgroup {path} still in use, left in place",
                  file=sys.stderr)
    for what in remove_state_dir(state_dir):
        print(f"bulkhead delete: {what} left in place", file=sys.stderr)
    remove_empty_parent(state_dir)
    _remove_stale_socket(sock)


def _is_our_daemon(pid: int, sandbox_id: str) -> bool:
    """Guard against pid reuse: only our daemon for this sandbox may be signalled."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"bulkhead.shim.daemon" in argv and sandbox_id.encode() in argv


def _stop_daemon(pid: int, sandbox_id: str) -> None:
    """Give a shutting-down daemon a moment to finish, then kill it."""
    deadline = time.monotonic() + DAEMON_EXIT_GRACE
    while _is_our_daemon(pid, sandbox_id):
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it exited after the check: what we wanted
                return
            deadline = time.monotonic() + DAEMON_EXIT_GRACE
        time.sleep(0.02)


def _remove_stale_socket(sock: str) -> None:
    """Remove the shim socket unless a live shim still listens on it."""
    if os.path.exists(sock) and not shim_listening(sock):
        with contextlib.suppress(FileNotFoundError):  # a concurrent delete removed it first
            os.unlink(sock)
