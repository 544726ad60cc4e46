"""A private containerd: a given containerd binary with its own root, state, sockets, config and
log, so the demo and the doctor's smoke test neither disturb nor depend on the node's containerd,
and leave nothing behind. Its config.toml is rendered by the installer's module
(install/containerd_config.py), which owns schema versions, plugin ids and handler keys."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bulkhead.demo import procs, shared_dirs
from bulkhead.demo.binaries import SYSTEM_PATH, ContainerdBinaries, find_containerd
from bulkhead.demo.ctr import CtrClient
from bulkhead.demo.errors import ContainerdError, CtrError
from bulkhead.install import containerd_config as cc
from bulkhead.sandbox.mounts import mount_points_under
from bulkhead.shim.grouping import socket_path

DEMO_ROOT_BASE = Path("/var/lib/bulkhead-demo")
DEMO_RUN_BASE = Path("/run/bulkhead-demo")
SHIM_BIN_DIR = Path("/usr/local/bin")  # where containerd-shim-bulkhead-v2 is installed
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


@dataclass
class PrivateContainerd(CtrClient):
    """A containerd with its own root/state/sockets/log; a context manager.

    Layout: <root_base>/<name>/root and <run_base>/<name>/{state, containerd.sock,
    containerd.sock.ttrpc, config.toml, containerd.log}. `binaries` defaults to
    find_containerd(): the node's containerd on PATH, else a development install.
    """

    ctr_bin: Path = field(init=False)
    address: Path = field(init=False)
    name: str = "default"
    binaries: ContainerdBinaries | None = None
    extra_path: Sequence[Path] = ()  # prepended to PATH (e.g. a directory with a fake shim)
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    root_base: Path = DEMO_ROOT_BASE
    run_base: Path = DEMO_RUN_BASE
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _last_log: str = field(default="", init=False, repr=False)
    _seen_tasks: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ContainerdError(f"bad instance name {self.name!r} (letters, digits, _.-; <= 40)")
        if self.binaries is None:
            self.binaries = find_containerd()
        self.ctr_bin = self.binaries.ctr
        self.address = self.run_dir / "containerd.sock"

    @property
    def bins(self) -> ContainerdBinaries:
        assert self.binaries is not None  # set by __post_init__
        return self.binaries

    # paths
    @property
    def root_dir(self) -> Path:
        return self.root_base / self.name

    @property
    def run_dir(self) -> Path:
        return self.run_base / self.name

    @property
    def root(self) -> Path:
        return self.root_dir / "root"

    @property
    def state(self) -> Path:
        return self.run_dir / "state"

    @property
    def ttrpc_address(self) -> Path:
        return Path(str(self.address) + ".ttrpc")

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "containerd.log"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "containerd.pid"

    @property
    def owner_path(self) -> Path:
        return self.run_dir / "owner.pid"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def containerd_version(self) -> str:
        """What the config is rendered for: the binary's own version."""
        exact = self.bins.exact_version()
        if exact is None:
            raise ContainerdError(f"{self.bins.containerd} (with {self.bins.ctr}) does not run "
                                  "or reports no containerd version")
        return exact

    @property
    def label(self) -> str:
        return f"containerd {self.bins.exact_version()}"

    def config(self) -> cc.PrivateConfig:
        return cc.PrivateConfig(root=self.root, state=self.state, grpc_address=self.address,
                                ttrpc_address=self.ttrpc_address,
                                containerd_version=self.containerd_version)

    def shared_dirs(self) -> list[Path]:
        """Host-wide dirs this instance's runs may create (removed again if they did)."""
        return shared_dirs.candidates((self.namespace, "default"))

    def environment(self) -> dict[str, str]:
        """containerd's env: our shim dir first, then this containerd's dir (its runc shim)."""
        first = [*map(str, self.extra_path), str(SHIM_BIN_DIR), str(self.bins.bin_dir)]
        rest = os.environ.get("PATH", SYSTEM_PATH).split(":") + SYSTEM_PATH.split(":")
        path: list[str] = []
        for entry in first + rest:
            if entry and entry not in path:
                path.append(entry)
        env = dict(os.environ)
        env["PATH"] = ":".join(path)
        return env

    # lifecycle
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start containerd and wait until its socket answers `ctr version`."""
        if self.running:
            return self
        self._check_binaries()
        self._before_start()
        shared_dirs.register(self.name, self.shared_dirs())
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o711)
        try:
            self._before_spawn()
            self.config_path.write_text(self.config().render())
            self._spawn()
            self._after_spawn()
        except BaseException:
            self.stop()
            raise
        return self

    def _check_binaries(self) -> None:
        """Fail before anything is created if the binaries do not run."""
        _ = self.containerd_version

    def _before_start(self) -> None:
        """Before any directory exists (the test harness reaps an earlier run's leftovers)."""

    def _before_spawn(self) -> None:
        """Dirs exist, config not written yet (the test harness sets up its CNI network)."""

    def _after_spawn(self) -> None:
        """containerd answers (the test harness imports its CRI images)."""

    def _spawn(self) -> None:
        """Run containerd on our config (log appended) and wait until it answers."""
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [str(self.bins.containerd), "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.run_dir,
            env=self.environment(),
            start_new_session=True,
        )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        self.owner_path.write_text(f"{os.getpid()}\n")
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_err = "socket not created"
        what = f"{self.label} ({self.name})"
        while time.monotonic() < deadline:
            assert self._proc is not None
            rc = self._proc.poll()
            if rc is not None:
                raise ContainerdError(
                    f"{what} exited with status {rc} before its socket answered; log tail:\n"
                    f"{self.log_tail()}"
                )
            if self.address.exists():
                res = self.ctr("version", check=False, timeout=10)
                if res.returncode == 0:
                    return
                last_err = res.stderr.strip()
            time.sleep(0.1)
        raise ContainerdError(
            f"{what} did not answer on {self.address} within {self.start_timeout} s "
            f"({last_err}); log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Remove tasks, stop containerd (TERM, then KILL), then remove every trace of it."""
        problems: list[str] = []
        if self.running:
            problems += self._before_stop()
            problems += self._remove_all_tasks()
            self._terminate()
        self._last_log = self.log_text() or self._last_log
        if self._log is not None:
            self._log.close()
            self._log = None
        self._proc = None
        problems += self._cleanup_files()
        shared_dirs.unregister(self.name)
        if problems:
            raise ContainerdError(f"cleanup of {self.name} incomplete: " + "; ".join(problems))

    def _before_stop(self) -> list[str]:
        """While containerd still answers (the test harness removes CRI pods); problems."""
        return []

    def _terminate(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=self.stop_timeout)

    def _remove_all_tasks(self) -> list[str]:
        """Kill and delete every task and container through the API, in every namespace."""
        problems: list[str] = []
        try:
            namespaces = self.lines("namespaces", "ls", "-q")
        except (CtrError, ContainerdError) as exc:
            return [f"listing namespaces: {exc}"]
        for ns in namespaces:
            problems += self._remove_namespace_tasks(ns)
        return problems

    def _remove_namespace_tasks(self, ns: str) -> list[str]:
        problems: list[str] = []
        try:
            tasks = self.lines("tasks", "ls", "-q", namespace=ns)
            for task_id in tasks:
                self._seen_tasks.add((ns, task_id))
                res = self.ctr("tasks", "rm", "-f", task_id, namespace=ns, check=False)
                if res.returncode != 0 and "not found" not in res.stderr:
                    problems.append(f"task rm -f {ns}/{task_id}: {res.stderr.strip()}")
            for cid in self.lines("containers", "ls", "-q", namespace=ns):
                self._seen_tasks.add((ns, cid))
                self.ctr("containers", "rm", cid, namespace=ns, check=False)
        except (CtrError, ContainerdError) as exc:
            problems.append(f"namespace {ns}: {exc}")
        return problems

    def shim_processes(self) -> list[procs.Proc]:
        """Shim processes started by this instance (they carry `-address <our socket>`)."""
        addr = str(self.address)
        return procs.find_processes(lambda p: procs.has_arg_pair(p, "-address", addr))

    def shim_socket(self, namespace: str, shim_id: str) -> Path:
        """Where containerd's convention puts the socket of one of our shims."""
        return Path(socket_path(str(self.address), namespace, shim_id))

    def _cleanup_files(self) -> list[str]:
        """Clean up our shims' sandboxes as containerd would after a shim's death, kill what
        is left of our shims, then delete our dirs (never across a mount)."""
        problems: list[str] = []
        self._cleanup_own_sandboxes()
        survivors = procs.kill_and_wait(p.pid for p in self.shim_processes())
        if survivors:
            problems.append(f"shim processes did not exit: {survivors}")
        for ns, task_id in self._seen_tasks:
            self.shim_socket(ns, task_id).unlink(missing_ok=True)
        self._seen_tasks.clear()
        self._unmount_leftovers()
        left = mount_points_under(self.root_dir, self.run_dir)
        if left:
            problems.append("mounts left under our dirs: "
                            + ", ".join(m.mount_point for m in left))
            return problems  # never rmtree across a mount
        problems += self._release_extras()
        for d in (self.root_dir, self.run_dir):
            shutil.rmtree(d, ignore_errors=True)
            if d.exists():
                problems.append(f"could not remove {d}")
        for base in (self.root_base, self.run_base):
            shared_dirs.rmdir_if_empty(base)
        return problems

    def _unmount_leftovers(self) -> None:
        """Mounts containerd left under our dirs stay (reported; the test harness unmounts)."""

    def _release_extras(self) -> list[str]:
        """What else the instance holds (the test harness: its CNI network); problems."""
        return []

    def _cleanup_own_sandboxes(self) -> None:
        """The shim's crash-only `delete` for every sandbox state dir of ours: a shim still
        shutting down (say, interrupted mid-Create) gets its grace period, then its VM,
        mounts and state dir go (containerd, already stopped, cannot do it any more)."""
        from bulkhead.monitor import discovery
        from bulkhead.shim.delete import cleanup_sandbox

        for found in discovery.discover():
            ours = self.shim_socket(found.namespace, found.sandbox_id)
            if found.state is not None and found.state.socket == str(ours):
                cleanup_sandbox(found.path, found.state.socket)

    # logs
    def log_text(self) -> str:
        """containerd's log (it also carries the shims' log FIFO output); kept after stop()."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return self._last_log

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_lines(self, needle: str) -> Iterator[str]:
        return (line for line in self.log_text().splitlines() if needle in line)

