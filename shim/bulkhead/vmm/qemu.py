"""The QEMU microvm driver: spawn QEMU for a pod, meet the agent, stop and reap.

Sockets are created by us and handed to QEMU as listening fds (chardev `fd=`): they exist before
QEMU runs, so the host connects at once without polling for socket files, and a QEMU that dies
takes the listeners with it (connects then fail instead of hanging). The command line is built
by qemu_cmdline, the process is spawned by process, the accelerator is chosen by accel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import time
from pathlib import Path

from bulkhead_wire.channel_auth import AuthError, new_key
from bulkhead_wire.guest_abi import VSOCK_CTL_PORT, VSOCK_DATA_PORT

from bulkhead.private_files import bind_private, open_private, write_private
from bulkhead.vmm import vsock
from bulkhead.vmm.accel import choose_accel
from bulkhead.vmm.base import (
    ACCELS,
    CHANNELS,
    CONSOLE_LOG,
    CTL_SOCKET,
    DATA_SOCKET,
    DEBUG_SOCKET,
    PID_FILE,
    QMP_SOCKET,
    STDERR_LOG,
    AgentLink,
    VMConfig,
    VMError,
    VMKilled,
    remove_runtime_files,
)
from bulkhead.vmm.channel_handshake import open_channel
from bulkhead.vmm.console import ConsoleRing, read_ring
from bulkhead.vmm.key_port import KeyPort
from bulkhead.vmm.process import describe_status, file_tail, resolve_binary, spawn, text_tail
from bulkhead.vmm.qemu_cmdline import SERIAL_PORTS, LaunchPlan, build_command
from bulkhead.vmm.qemu_jail import qemu_ruleset
from bulkhead.vmm.qmp import QMPClient, QMPError

log = logging.getLogger(__name__)

# Deaths that come from outside QEMU (an operator, the OOM killer, a test): see VMKilled.
KILL_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

VSOCK_PORTS = {"ctl": VSOCK_CTL_PORT, "data": VSOCK_DATA_PORT}  # by channel role
SOCKET_FILES = {"ctl": CTL_SOCKET, "data": DATA_SOCKET}
STREAM_LIMIT = 1 << 20
# Guest RAM that lives in a shared memory file is not part of a snapshot (templates, clones).
IGNORE_SHARED = {"capability": "x-ignore-shared", "state": True}

_no_sandbox: set[str] = set()  # QEMU binaries that rejected -sandbox on (no seccomp support)


def resolve_channel(config: VMConfig) -> str:
    """serial or vsock; auto means vsock iff /dev/vhost-vsock is usable."""
    if config.channel == "auto":
        return "vsock" if vsock.vsock_usable() else "serial"
    if config.channel == "vsock" and not vsock.vsock_usable():
        raise VMError(f"VM {config.name}: channel=vsock but {vsock.VHOST_VSOCK_DEVICE} "
                      "is not usable (missing vhost_vsock module or no AF_VSOCK)")
    return config.channel


def preflight(config: VMConfig) -> None:
    """Fail with a named resource before spawning anything."""
    if config.channel not in CHANNELS:
        raise VMError(f"VM {config.name}: unknown channel {config.channel!r} "
                      f"({', '.join(CHANNELS)})")
    if config.accel not in ACCELS:
        raise VMError(f"VM {config.name}: unknown accel {config.accel!r} ({', '.join(ACCELS)})")
    if config.memory_mib < 64 or config.vcpus < 1:
        raise VMError(f"VM {config.name}: need memory_mib >= 64 and vcpus >= 1 "
                      f"(got {config.memory_mib} MiB, {config.vcpus} vCPUs)")
    resolve_binary(config.qemu_binary)
    for what, path in (("kernel", config.kernel), ("initrd", config.initrd),
                       ("rootfs", config.rootfs)):
        if not path.is_file():
            raise VMError(f"VM {config.name}: guest {what} {path} does not exist or is not a file")
    for what, path in (("state", config.state_dir), ("shared", config.shared_dir)):
        if not path.is_dir():
            raise VMError(f"VM {config.name}: {what} directory {path} does not exist")


def listen_unix(path: Path) -> socket.socket:
    """A listening unix socket at path (replacing a stale one) for QEMU to inherit."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bind_private(sock, str(path))
        sock.listen(1)
    except OSError as exc:
        sock.close()
        raise VMError(f"create socket {path}: {exc}") from exc
    return sock


def write_pid_file(state_dir: Path, pid: int) -> None:
    """Record the QEMU pid atomically (crash-only cleanup finds it there)."""
    write_private(str(state_dir / PID_FILE), f"{pid}\n".encode())


_GUEST_FAILURE = re.compile(r"bulkhead-init: FATAL .*|Kernel panic - .*")


def guest_failure(console: str) -> str:
    """The guest's last fatal message on its console: the guest exits 0 even when it failed."""
    found = _GUEST_FAILURE.findall(console)
    return found[-1].strip() if found else ""


class _EarlyExit(Exception):
    """QEMU exited before the agent answered (internal: may trigger the no-sandbox retry)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class QemuVM:
    """One pod VM run by QEMU microvm; implements bulkhead.vmm.base.VirtualMachine."""

    def __init__(self, config: VMConfig) -> None:
        self.config = config
        self.pid = 0
        self.accel = ""
        self.accel_reason = ""
        self.channel = ""
        self.cid = 0
        self.sandboxed = False
        self.timings: dict[str, float] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._sockets: list[socket.socket] = []
        self._pending: list[str] = []
        self._started = False
        self._stop_requested = False
        self._migration_fd = -1
        self._console: ConsoleRing | None = None
        self.channel_key = new_key()  # this VM's channel secret, handed over on the key port
        self._key_port: KeyPort | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def restored(self) -> bool:
        """Cloned from a template rather than booted."""
        return self.config.restore_from is not None

    async def start(self) -> AgentLink:
        """Boot the VM and return both agent channels; on any failure QEMU is dead and reaped."""
        if self._started:
            raise VMError(f"VM {self.config.name}: start() called twice")
        self._started = True
        try:
            preflight(self.config)
            self.accel, self.accel_reason = await choose_accel(self.config)
            self.timings["accel_chosen"] = time.monotonic()
            self.channel = resolve_channel(self.config)
            return await self._boot_with_fallback()
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, SIGKILL after timeout, reap, remove sockets and pid file; idempotent.

        Also safe while start() runs: a start() that has not spawned QEMU yet will not spawn it.
        """
        self._stop_requested = True
        await self._terminate(timeout)

    def hang_up(self) -> None:
        """Close the host ends of the agent channels; QEMU and the guest keep running (a data
        socket a stdio link took over is the link's to close: it is detached, and skipped)."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    async def _terminate(self, timeout: float = 3.0) -> None:
        """Make sure QEMU is dead and reaped and its runtime files are gone."""
        self.hang_up()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("VM %s: QEMU pid %d ignored SIGTERM for %s s; SIGKILL",
                            self.config.name, proc.pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._console is not None:
            self._console.close()
        if self._key_port is not None:
            self._key_port.close()
        remove_runtime_files(self.config.state_dir)

    async def wait(self) -> int:
        """Wait for QEMU to exit and return its status (negative: killed by that signal)."""
        if self._proc is None:
            raise VMError(f"VM {self.config.name}: wait() before QEMU was started")
        return await self._proc.wait()

    def console_tail(self, lines: int = 20) -> str:
        """The last lines the guest wrote on its serial console."""
        if self._console is not None:
            self._console.flush()
        return text_tail(read_ring(self.config.state_dir / CONSOLE_LOG, 65536), lines)

    async def qmp(self, timeout: float = 5.0) -> QMPClient:
        """A negotiated QMP connection to this VM (one client at a time); the caller closes it."""
        return await QMPClient.connect(str(self.config.state_dir / QMP_SOCKET), timeout)

    # -- boot ----------------------------------------------------------------------------------

    async def _boot_with_fallback(self) -> AgentLink:
        """Boot with the seccomp sandbox. A QEMU that cannot install it fails the VM with that
        reason, unless the config allows running unfiltered (allow_unfiltered_qemu): then it
        is logged and the VM boots without."""
        binary = self.config.qemu_binary
        sandbox = not (self.config.allow_unfiltered and binary in _no_sandbox)
        try:
            return await self._boot(sandbox)
        except _EarlyExit as exc:
            if not (sandbox and self._sandbox_rejected()):
                raise self._exit_error(exc.status) from None
            if not self.config.allow_unfiltered:
                raise VMError(f"VM {self.config.name}: {binary} cannot install its seccomp "
                              f"filter (-sandbox: {self._stderr_tail(300)}); use a QEMU built "
                              "with seccomp, or set allow_unfiltered_qemu = true to run it "
                              "without one") from None
            log.warning("VM %s: %s rejected -sandbox (%s); running without the seccomp filter",
                        self.config.name, binary, self._stderr_tail(300))
            _no_sandbox.add(binary)
        await self._terminate()
        self._proc = None
        try:
            return await self._boot(False)
        except _EarlyExit as exc:
            raise self._exit_error(exc.status) from None

    async def _boot(self, sandbox: bool) -> AgentLink:
        """Spawn QEMU with its sockets already listening, then wait for the agent's handshake."""
        await self._spawn(sandbox)
        if self.config.restore_from is not None:
            await self._resume()
        return await self._await_agent()

    async def _resume(self) -> None:
        """Load the template's device state (its RAM is the memory file) and let it run."""
        assert self._proc is not None
        try:
            qmp = await self.qmp()
        except QMPError as exc:
            raise await self._resume_error(exc) from None
        try:
            await qmp.execute("migrate-set-capabilities", {"capabilities": [IGNORE_SHARED]})
            await qmp.execute("migrate-incoming", {"uri": f"fd:{self._migration_fd}"})
            deadline = time.monotonic() + self.config.boot_timeout
            while (status := (await qmp.execute("query-status"))["status"]) == "inmigrate":
                if self._proc.returncode is not None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.002)
            if self._proc.returncode is not None or status == "inmigrate":
                raise VMError(f"VM {self.config.name}: resuming the template state "
                              f"{self.config.restore_from} failed (status {status}; stderr: "
                              f"{self._stderr_tail() or 'empty'})")
            self.timings["state_loaded"] = time.monotonic()
            if status != "running":
                await qmp.execute("cont")
            self.timings["guest_running"] = time.monotonic()
        except QMPError as exc:
            raise await self._resume_error(exc) from None
        finally:
            await qmp.close()

    async def _resume_error(self, exc: QMPError) -> VMError:
        """Why resuming failed: QEMU's exit if it died (killed, crashed), else QMP's error."""
        assert self._proc is not None
        with contextlib.suppress(TimeoutError):  # a lost QMP link usually means QEMU is gone
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), 0.5)
        if self._proc.returncode is not None:
            return self._exit_error(self._proc.returncode)
        return VMError(f"VM {self.config.name}: resuming the template state "
                       f"{self.config.restore_from}: {exc} (stderr: "
                       f"{self._stderr_tail() or 'empty'})")

    async def snapshot(self, path: Path, timeout: float = 60.0) -> None:
        """Pause the guest and write its device state to path (template builds).

        With x-ignore-shared the guest RAM, already in the shared memory file, is not copied:
        the state is only the devices' (tens of KiB).
        """
        qmp = await self.qmp()
        try:
            await qmp.execute("stop")
            await qmp.execute("migrate-set-capabilities", {"capabilities": [IGNORE_SHARED]})
            # Outgoing fd: migration takes only a named fd, handed over on the QMP socket.
            with os.fdopen(open_private(str(path)), "wb") as state:
                await qmp.execute("getfd", {"fdname": "snapshot"}, fd=state.fileno())
            await qmp.execute("migrate", {"uri": "fd:snapshot"})
            deadline = time.monotonic() + timeout
            while (info := await qmp.execute("query-migrate")).get("status") not in (
                    "completed", "failed", "cancelled"):
                if time.monotonic() > deadline:
                    raise VMError(f"VM {self.config.name}: snapshot not done in {timeout:g} s")
                await asyncio.sleep(0.01)
            if info.get("status") != "completed":
                raise VMError(f"VM {self.config.name}: snapshot {info.get('status')}: "
                              f"{info.get('error-desc', 'no reason given')}")
        except QMPError as exc:
            raise VMError(f"VM {self.config.name}: snapshot: {exc}") from None
        finally:
            await qmp.close()

    async def _spawn(self, sandbox: bool) -> None:
        """Create the listeners (or reserve a vsock CID), spawn QEMU, record its pid."""
        cfg = self.config
        owned: list[socket.socket] = []
        reservation: vsock.CIDReservation | None = None
        migration = self._open_migration_file()
        try:
            owned.append(listen_unix(cfg.state_dir / QMP_SOCKET))
            plan = LaunchPlan(accel=self.accel, channel=self.channel, qmp_fd=owned[0].fileno(),
                              sandbox=sandbox)
            if self.channel == "serial":
                owned.append(listen_unix(cfg.state_dir / CTL_SOCKET))
                owned.append(listen_unix(cfg.state_dir / DATA_SOCKET))
                plan.ctl_fd, plan.data_fd = owned[1].fileno(), owned[2].fileno()
            else:
                reservation = self._reserve_cid()
                plan.vhost_fd, plan.cid = reservation.fd, reservation.cid
            if cfg.debug_shell:
                owned.append(listen_unix(cfg.state_dir / DEBUG_SOCKET))
                plan.debug_fd = owned[-1].fileno()
            plan.pass_fds = [s.fileno() for s in owned] + ([plan.vhost_fd] if reservation else [])
            if cfg.tap_fd >= 0:
                plan.pass_fds.append(cfg.tap_fd)
            if migration is not None:
                plan.migration_fd = self._migration_fd = migration
                plan.pass_fds.append(migration)
            self._console = ConsoleRing(cfg.state_dir / CONSOLE_LOG)
            plan.console_fd = self._console.qemu_fd
            plan.pass_fds.append(plan.console_fd)
            if self._key_port is not None:
                self._key_port.close()  # a first attempt's (the seccomp fallback spawns again)
            self._key_port = KeyPort(self.channel_key)
            plan.key_fd = self._key_port.qemu_fd
            plan.pass_fds.append(plan.key_fd)
            argv = build_command(cfg, plan)
            log.debug("VM %s: %s", cfg.name, " ".join(argv))
            if self._stop_requested:
                raise VMError(f"VM {cfg.name}: stopped while starting; QEMU not spawned")
            ruleset = qemu_ruleset(cfg, resolve_binary(cfg.qemu_binary))
            self.timings["spawn"] = time.monotonic()
            try:
                self._proc = await spawn(argv, cfg.state_dir / STDERR_LOG, plan.pass_fds,
                                         new_netns=cfg.own_netns, ruleset=ruleset)
            finally:
                if ruleset is not None:
                    os.close(ruleset)
            self.pid = self._proc.pid
            self.timings["qemu_started"] = time.monotonic()
            write_pid_file(cfg.state_dir, self.pid)
            self.sandboxed = sandbox
            self._console.start()
            self._key_port.start()
        finally:
            if self._console is not None:
                self._console.release_qemu_fd()
            if self._key_port is not None:
                self._key_port.release_qemu_fd()
            for sock in owned:
                sock.close()  # QEMU holds the listeners now; if it dies, connects are refused
            if reservation is not None:
                reservation.close()
            if migration is not None:
                os.close(migration)  # QEMU inherited it under the same number

    def _open_migration_file(self) -> int | None:
        """The template state QEMU resumes from, opened for it to inherit."""
        cfg = self.config
        if cfg.restore_from is None:
            return None
        try:
            return os.open(cfg.restore_from, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise VMError(f"VM {cfg.name}: open the template state {cfg.restore_from}: "
                          f"{exc.strerror}") from exc

    def _reserve_cid(self) -> vsock.CIDReservation:
        """Claim a guest CID for this VM, naming the device on failure."""
        seed = (os.getpid() << 8) ^ hash(self.config.name)
        try:
            reservation = vsock.reserve_cid(seed)
        except OSError as exc:
            raise VMError(f"VM {self.config.name}: reserve vsock guest CID: {exc}") from exc
        self.cid = reservation.cid
        return reservation

    async def _await_agent(self) -> AgentLink:
        """Race the handshake against QEMU exiting and the boot timeout; name what failed."""
        assert self._proc is not None
        exited = asyncio.ensure_future(self._proc.wait())
        handshake = asyncio.ensure_future(self._open_channels())
        try:
            done, _ = await asyncio.wait({exited, handshake}, timeout=self.config.boot_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if handshake in done and handshake.exception() is None:
                self.timings["agent_connected"] = time.monotonic()
                return handshake.result()
            if exited in done:
                raise _EarlyExit(exited.result())
            if handshake in done:
                await self._handshake_failed(handshake.exception(), exited)
            raise VMError(f"agent did not answer on {self._port_name(self._pending[0])} within "
                          f"{self.config.boot_timeout:g} s (VM {self.config.name}; console tail: "
                          f"{self.console_tail() or 'empty'})")
        finally:
            for fut in (handshake, exited):
                if not fut.done():
                    fut.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await fut

    async def _handshake_failed(self, exc: BaseException | None, exited: asyncio.Future[int]
                                ) -> None:
        """A channel broke during the handshake: QEMU exiting is the usual cause; report that."""
        with contextlib.suppress(asyncio.TimeoutError):
            status = await asyncio.wait_for(asyncio.shield(exited), 2.0)
            raise _EarlyExit(status)
        if isinstance(exc, VMError):
            raise exc
        role = self._pending[0] if self._pending else "ctl"
        raise VMError(f"handshake on {self._port_name(role)} of VM {self.config.name} failed: "
                      f"{exc!r} (console tail: {self.console_tail() or 'empty'})") from exc

    async def _open_channels(self) -> AgentLink:
        """Connect both channels concurrently and consume the agent's magic on each."""
        self._pending = ["ctl", "data"]
        ctl, data = await asyncio.gather(self._open_channel("ctl"), self._open_channel("data"))
        self._sockets.remove(ctl)  # from here on its StreamWriter closes it
        reader, writer = await asyncio.open_connection(sock=ctl, limit=STREAM_LIMIT)
        self._writers.append(writer)
        return AgentLink(ctl=(reader, writer), data=data)

    async def _open_channel(self, role: str) -> socket.socket:
        """Connect one channel right away (the guest drops early host data) and read the magic
        byte by byte off the socket, so nothing after it is buffered anywhere but the kernel."""
        loop = asyncio.get_running_loop()
        if self.channel == "serial":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, str(self.config.state_dir / SOCKET_FILES[role]))
            except BaseException:
                sock.close()
                raise
        else:
            sock = await vsock.connect(self.cid, VSOCK_PORTS[role])
        self._sockets.append(sock)
        self.timings[f"{role}_connected"] = time.monotonic()
        what = f"{self._port_name(role)} of VM {self.config.name}"
        try:
            await open_channel(sock, role, self.channel_key, what)
        except (ValueError, AuthError) as exc:
            raise VMError(str(exc)) from None
        self.timings[f"{role}_ready"] = time.monotonic()
        self._pending.remove(role)
        return sock

    # -- messages ------------------------------------------------------------------------------

    def _port_name(self, role: str) -> str:
        """How a channel is called in messages, per transport."""
        if self.channel == "vsock":
            return f"vsock port {VSOCK_PORTS[role]} (guest CID {self.cid})"
        return f"virtio-serial port {SERIAL_PORTS[role]}"

    def _stderr_tail(self, max_chars: int = 2000) -> str:
        """What QEMU printed, trimmed for an error message."""
        text = file_tail(self.config.state_dir / STDERR_LOG, 40)
        return text[-max_chars:].replace("\n", " | ")

    def _sandbox_rejected(self) -> bool:
        """True if QEMU's stderr says -sandbox/seccomp is unsupported or could not be installed."""
        text = file_tail(self.config.state_dir / STDERR_LOG, 40).lower()
        return "sandbox" in text or "seccomp" in text

    def _exit_error(self, status: int) -> VMError:
        """The boot failure message: exit status, the guest's own reason, stderr, console tail."""
        reason = guest_failure(self.console_tail(200))
        error = VMKilled if -status in KILL_SIGNALS else VMError
        return error(f"VM {self.config.name} exited with {describe_status(status)} during boot"
                       f"{': ' + reason if reason else ''} (stderr: "
                       f"{self._stderr_tail() or 'empty'}; console tail: "
                       f"{self.console_tail() or 'empty'})")
