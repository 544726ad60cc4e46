"""The resident shim daemon: one per pod, one asyncio loop, ttrpc on the socket from `start`."""

from __future__ import annotations

import sys

# asyncio imports ssl when it can; a shim never speaks TLS, and libssl costs every shim ~3 MiB.
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import asyncio
import contextlib
import logging
import os
import signal
import socket

from bulkhead_wire.ttrpc import Server

from bulkhead import config as config_mod
from bulkhead import event_loop
from bulkhead.monitor.publisher import SnapshotPublisher
from bulkhead.private_files import FILE_MODE, open_private
from bulkhead.sandbox.launcher import QemuLauncher
from bulkhead.sandbox.sandbox import Sandbox
from bulkhead.sandbox.state import SHIM_LOG
from bulkhead.shim.events import EventPublisher
from bulkhead.shim.flags import ShimArgs, parse
from bulkhead.shim.grouping import socket_path
from bulkhead.shim.log_format import LogrusFormatter
from bulkhead.shim.task_service import SERVICES, TaskService
from bulkhead.vmm.console import CAP_BYTES as RING_CAP_BYTES

log = logging.getLogger("bulkhead")
LISTEN_FD = 3
SHUTDOWN_FLUSH_TIMEOUT = 2.0  # seconds pending events may delay the exit of a finished shim


def setup_logging(bundle: str, debug: bool, namespace: str = "", sandbox: str = "") -> None:
    """Log into the bundle's `log` FIFO (fd 2 from start), blocking writes, SIGPIPE ignored."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        fd = os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        os.dup2(fd, 2)
        os.close(fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogrusFormatter(namespace, sandbox))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def keep_log_file(state_dir: str) -> logging.Handler:
    """Also log into the state dir, for `bulkhead logs`: a ring of two files, capped like the
    console's."""
    import logging.handlers

    class PrivateRing(logging.handlers.RotatingFileHandler):
        """Each file of the ring is 0600 whatever the umask (the new one after a rollover)."""

        def doRollover(self) -> None:  # noqa: N802 (logging's name)
            super().doRollover()
            os.chmod(self.baseFilename, FILE_MODE)

    root = logging.getLogger()
    path = os.path.join(state_dir, SHIM_LOG)
    os.close(open_private(path, os.O_WRONLY | os.O_APPEND))
    handler = PrivateRing(path, maxBytes=RING_CAP_BYTES, backupCount=1)
    handler.setFormatter(root.handlers[0].formatter if root.handlers else None)
    root.addHandler(handler)
    return handler


async def serve(args: ShimArgs, cfg: config_mod.Config, config_error: str = "") -> None:
    """Serve the task API until Shutdown (with no tasks left) or SIGTERM."""
    loop = asyncio.get_running_loop()
    sock_path = socket_path(args.address, args.namespace, args.id)
    sandbox = Sandbox(args.id, args.namespace, sock_path, QemuLauncher(), SnapshotPublisher())
    sandbox.prepare()
    log_file = keep_log_file(sandbox.state_dir)
    events = EventPublisher(os.environ.get("TTRPC_ADDRESS", args.address + ".ttrpc"),
                            args.namespace)
    done = asyncio.Event()
    finishing: list[asyncio.Task[None]] = []

    async def cleanup() -> None:
        logging.getLogger().removeHandler(log_file)  # its directory goes now
        log_file.close()
        await sandbox.destroy()
        await events.flush(SHUTDOWN_FLUSH_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        loop.call_soon(done.set)

    def finish() -> None:
        """Start the cleanup once, in its own task: no caller's timeout can cut it short."""
        if not finishing:
            finishing.append(asyncio.ensure_future(cleanup()))

    service = TaskService(sandbox, events, finish, cfg, config_error)
    server = Server()
    for name in SERVICES:
        server.register(name, service.methods())
    listener = socket.socket(fileno=LISTEN_FD)
    srv = await asyncio.start_unix_server(server.serve_connection, sock=listener)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish)
    log.info("shim for sandbox %s serving on %s", args.id, sock_path)
    try:
        await done.wait()
    finally:
        srv.close()
        await events.close()
    log.info("shim for sandbox %s exiting", args.id)


def main() -> int:
    """Daemon entry (spawned by `start`, never by containerd directly)."""
    args = parse(sys.argv[1:])
    setup_logging(args.bundle, args.debug, args.namespace, args.id)
    os.chdir("/")
    config_error = ""
    try:
        cfg = config_mod.load()
    except config_mod.ConfigError as exc:  # reported at Create, where the user sees it
        log.error("%s", exc)
        cfg, config_error = config_mod.Config(), f"bulkhead configuration {exc}"
    try:
        event_loop.run(serve(args, cfg, config_error))  # children (QEMU) reaped by pidfd
    except Exception:
        log.exception("shim daemon failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
