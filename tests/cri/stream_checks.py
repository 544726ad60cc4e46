"""CRI streaming checks for a runtime handler: ExecSync, streaming Exec (with a TTY and its
resize channel) and Attach."""

from __future__ import annotations

import contextlib
import time

from cri import logs, streaming
from cri import runtime_v1_pb2 as pb
from cri.client import CriError
from cri.fixtures import CriEnv
from cri.pod_tools import (
    READY_TIMEOUT,
    SLEEP,
    exec_ok,
    running_pod,
    start,
    wait_until,
)


def check_exec_sync(env: CriEnv, handler: str) -> None:
    """ExecSync returns stdout, stderr and the exit code; a timeout is DEADLINE_EXCEEDED."""
    with running_pod(env, handler, "execsync") as pod:
        config = env.client.container_config("sleeper", env.image, command=SLEEP,
                                             env={"GREETING": "hi there"})
        cid = env.client.create_and_start(pod, config)
        res = env.client.exec_sync(cid, ["sh", "-c", 'echo "$GREETING"; echo err >&2; exit 3'])
        assert (res.stdout, res.stderr, res.exit_code) == (b"hi there\n", b"err\n", 3)
        try:
            env.client.exec_sync(cid, ["sleep", "30"], timeout=2)
        except CriError as exc:
            assert exc.code.name == "DEADLINE_EXCEEDED", exc
        else:
            raise AssertionError("ExecSync did not time out")
        assert exec_ok(env.client, cid, "echo", "still alive") == "still alive\n"


def check_exec_streams(env: CriEnv, handler: str) -> None:
    """Streaming Exec keeps stdout and stderr apart and reports the exit code in its status."""
    with running_pod(env, handler, "exec") as pod:
        cid = start(env, pod, "sleeper", SLEEP)
        url = env.client.exec(cid, ["sh", "-c", "echo out; echo err >&2; exit 7"])
        result = streaming.run(url)
        assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 7)
        assert result.channels[-1] == streaming.STATUS


def check_exec_tty(env: CriEnv, handler: str) -> None:
    """An interactive TTY exec: the shell sees the size sent on the resize channel and
    TERM=xterm; exit status 5 comes back."""
    with running_pod(env, handler, "tty") as pod:
        cid = start(env, pod, "sleeper", SLEEP)
        url = env.client.exec(cid, ["sh"], tty=True, stdin=True, stdout=True, stderr=False)
        with streaming.Session(url) as session:
            _resize_until_seen(session, 123, 45)
            session.write(b"echo term=$TERM; exit 5\n")
            result = session.wait(timeout=60)
    assert b"term=xterm" in result.stdout
    assert result.exit_code == 5


def _resize_until_seen(session: streaming.Session, width: int, height: int) -> None:
    """Resize, then ask stty; the resize may reach the pty after the shell starts, so repeat."""
    want = f"{height} {width}".encode()
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        session.resize(width, height)
        session.write(b"stty size\n")
        with contextlib.suppress(TimeoutError):
            session.read_until(want, timeout=3)
            return
    raise AssertionError(f"stty never printed {want!r}: {session.result.stdout[-300:]!r}")


def check_attach(env: CriEnv, handler: str) -> None:
    """Attach reaches a running container's stdin and stdout (which also go to its log)."""
    with running_pod(env, handler, "attach") as pod:
        cid = start(env, pod, "echoer", ["sh", "-c", "while read l; do echo got-$l; done"],
                    stdin=True)
        env.client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
        url = env.client.attach(cid, stdin=True, stdout=True, stderr=True)
        with streaming.Session(url) as session:
            session.write(b"ping\n")
            assert b"got-ping" in session.read_until(b"got-ping", timeout=60)
        log_path = env.client.container_status(cid).status.log_path
        wait_until("attached output in the log",
                   lambda: b"got-ping" in logs.lines(logs.read(log_path), "stdout"), 30)
