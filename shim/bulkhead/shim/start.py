"""`start`: find or spawn the pod's shim daemon and print its address (once per container).

containerd runs this for every container, so it imports only what it needs and never writes
anything but the address on stdout (stdout and stderr are read together as the address).
"""

from __future__ import annotations

import errno
import os
import socket
import sys

from bulkhead_wire.checks import check_id

from bulkhead.paths import SOCKET_DIR
from bulkhead.private_files import bind_private, write_private
from bulkhead.shim.flags import ShimArgs
from bulkhead.shim.grouping import read_annotations, sandbox_key, shim_listening, socket_path


class StartError(Exception):
    """start could not produce a shim address."""


def run(args: ShimArgs) -> str:
    """Return the address containerd must dial for this container."""
    if not args.id or not args.namespace or not args.address:
        raise StartError("start needs -id, -namespace and -address")
    sys.stdin.buffer.read()  # runtime options (Any) or BootstrapParams; settings come from config
    bundle = os.getcwd()
    key, joins = sandbox_key(args.id, read_annotations(bundle))
    try:
        for kind, value in (("namespace", args.namespace), ("container", args.id),
                            ("sandbox", key)):
            check_id(kind, value)
    except ValueError as exc:
        raise StartError(f"container {args.id!r}: {exc}") from None
    path = socket_path(args.address, args.namespace, key)
    address = "unix://" + path
    if joins:
        if not shim_listening(path):
            raise StartError(f"pod sandbox {key} has no running shim (socket {path})")
    else:
        listener = _bind(path)
        if listener is not None:
            try:
                _spawn_daemon(args, key, bundle, listener)
            except BaseException:
                os.unlink(path)
                raise
            finally:
                listener.close()
    _write_address(bundle, address)
    return address


def _bind(path: str) -> socket.socket | None:
    """Bind the shim socket; None if a live shim already owns it (then reuse that one)."""
    os.makedirs(SOCKET_DIR, mode=0o711, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bind_private(sock, path)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            sock.close()
            raise StartError(f"cannot bind shim socket {path}: {exc.strerror}") from None
        if shim_listening(path):
            sock.close()
            return None
        os.unlink(path)  # stale socket of a dead shim
        bind_private(sock, path)
    sock.listen(128)
    return sock


def _spawn_daemon(args: ShimArgs, key: str, bundle: str, listener: socket.socket) -> None:
    """Start the detached daemon with the listening socket as fd 3 and no tie to our pipes."""
    argv = [sys.executable, "-m", "bulkhead.shim.daemon",
            "-namespace", args.namespace, "-id", key, "-address", args.address,
            "-publish-binary", args.publish_binary, "-bundle", bundle]
    if args.debug:
        argv.append("-debug")
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        log_fd = os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        log_fd = devnull
    actions = [
        (os.POSIX_SPAWN_DUP2, devnull, 0),
        (os.POSIX_SPAWN_DUP2, devnull, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
        (os.POSIX_SPAWN_DUP2, listener.fileno(), 3),
    ]
    try:
        os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions, setsid=True)
    finally:
        os.close(devnull)
        if log_fd != devnull:
            os.close(log_fd)


def _write_address(bundle: str, address: str) -> None:
    """containerd 1.x reconnects after a restart through <bundle>/address."""
    write_private(os.path.join(bundle, "address"), address.encode())
