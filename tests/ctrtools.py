"""Helpers for driving Bulkhead through real containerd from tests: ctr runs, detached tasks,
the event stream, a pty for terminal sessions, and containerd's gRPC API where ctr has no verb."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import secrets
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bulkhead.demo import procs
from harness.containerd import PrivateContainerd
from leaks import is_qemu

RUNTIME = "io.containerd.bulkhead.v2"
GUEST = Path(os.environ.get("BULKHEAD_GUEST_DIR") or "/usr/local/share/bulkhead/guest")


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def run(ctd: PrivateContainerd, image: str, *cmd: str, opts: tuple[str, ...] = (),
        timeout: float = 120, input: str | None = None) -> tuple[int, str, str]:
    """`ctr run --rm` with Bulkhead; returns (exit code, stdout, stderr)."""
    res = ctd.ctr("run", "--runtime", RUNTIME, "--rm", *opts, image, uid("t"), *cmd,
                  check=False, timeout=timeout, input=input)
    return res.returncode, res.stdout, res.stderr


def qemu_pids() -> set[int]:
    return {p.pid for p in procs.processes() if is_qemu(p)}


def task_row(ctd: PrivateContainerd, cid: str) -> list[str] | None:
    for line in ctd.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields
    return None


def wait_status(ctd: PrivateContainerd, cid: str, status: str, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        row = task_row(ctd, cid)
        if row is not None and row[2] == status:
            return row
        assert time.monotonic() < deadline, f"{cid} never became {status}: {row}"
        time.sleep(0.1)


@contextlib.contextmanager
def detached(ctd: PrivateContainerd, image: str, *cmd: str, opts: tuple[str, ...] = (),
             prefix: str = "det") -> Iterator[str]:
    """A `ctr run -d` container, RUNNING on entry, killed and removed on exit."""
    cid = uid(prefix)
    try:
        ctd.ctr("run", "--runtime", RUNTIME, "-d", *opts, image, cid, *cmd, timeout=120)
        wait_status(ctd, cid, "RUNNING")
        yield cid
    finally:
        ctd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
        ctd.ctr("tasks", "rm", "-f", cid, check=False)
        ctd.ctr("containers", "rm", cid, check=False)


def end_foreground_run(ctd: PrivateContainerd, proc: subprocess.Popen[str], cid: str) -> None:
    """After a test drove a foreground `ctr run`: kill it if it still runs, remove what is left."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if task_row(ctd, cid) is not None:
        ctd.ctr("task", "rm", "-f", cid, check=False)
    ctd.ctr("container", "rm", cid, check=False)


def exec_(ctd: PrivateContainerd, cid: str, *cmd: str, exec_id: str = "",
          timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`ctr task exec` (attached); never raises on a non-zero exit."""
    return ctd.ctr("tasks", "exec", "--exec-id", exec_id or uid("x"), cid, *cmd, check=False,
                   timeout=timeout, input=input)


@dataclass
class Event:
    topic: str
    body: dict[str, object]


@dataclass
class EventLog:
    """`ctr events` running for the duration of a test; events() parses what it printed."""

    ctd: PrivateContainerd
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    def __enter__(self) -> EventLog:
        self.proc = subprocess.Popen(self.ctd.ctr_argv("events"), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.3)  # let ctr subscribe before the test acts
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        time.sleep(0.3)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.lines = out.splitlines()

    def events(self, container_id: str) -> list[Event]:
        """Task events of one container, in the order containerd delivered them."""
        found = []
        for line in self.lines:
            parts = line.split(" ", 6)
            if len(parts) < 7 or not parts[5].startswith("/tasks/"):
                continue
            body = json.loads(parts[6]) if parts[6].startswith("{") else {}
            if body.get("container_id") == container_id:
                found.append(Event(parts[5], body))
        return found


def update_resources(ctd: PrivateContainerd, cid: str, resources: dict[str, object]) -> None:
    """containerd.services.tasks.v1.Tasks/Update over gRPC (ctr has no `update` verb)."""
    import grpc
    from bulkhead_wire.proto import task_pb2
    from google.protobuf import any_pb2, empty_pb2

    # The service's UpdateTaskRequest has the shim's field numbers: 1 id, 2 resources.
    req = task_pb2.UpdateTaskRequest(id=cid, resources=any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        value=json.dumps(resources).encode()))
    with grpc.insecure_channel(f"unix://{ctd.address}") as channel:
        update = channel.unary_unary("/containerd.services.tasks.v1.Tasks/Update",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=empty_pb2.Empty.FromString)
        update(req, metadata=[("containerd-namespace", ctd.namespace)], timeout=60)


def metrics(ctd: PrivateContainerd, cid: str) -> dict[str, int]:
    """`ctr task metrics` as {name: value}."""
    out = ctd.ctr("tasks", "metrics", cid).stdout
    values = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    return values


class PtySession:
    """A command on a pseudo-terminal, driven like a user at a keyboard."""

    def __init__(self, argv: list[str], rows: int = 30, cols: int = 100) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            os.execvp(argv[0], argv)
        self.output = b""
        self._pos = 0
        self.resize(rows, cols)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size; the program (ctr) learns of it through SIGWINCH."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGWINCH)

    def send(self, text: bytes) -> None:
        os.write(self.fd, text)

    def _read(self, timeout: float) -> bool:
        """Append what the terminal printed within timeout; False once it is closed."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.fd, 4096)
            except OSError:
                return False
        return True

    def expect(self, needle: bytes, timeout: float = 60) -> bool:
        """Read until needle appears after the previous match; consume up to it."""
        deadline = time.monotonic() + timeout
        while needle not in self.output[self._pos:] and time.monotonic() < deadline:
            if not self._read(0.2):
                break
        at = self.output.find(needle, self._pos)
        if at < 0:
            return False
        self._pos = at + len(needle)
        return True

    def wait(self, timeout: float = 60) -> int:
        """The exit status of the command (it is killed if it does not exit in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.2)  # keep draining so the program never blocks on a full terminal
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError(f"terminal session did not end; output:\n{self.text()[-2000:]}")

    def text(self) -> str:
        return self.output.decode(errors="replace")
