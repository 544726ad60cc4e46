"""CRI checks of what a container says, for a runtime handler: the CRI log file format (F and P
lines), a TTY's log, ReopenContainerLog, and kubelet's termination message file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cri import logs
from cri import runtime_v1_pb2 as pb
from cri.fixtures import CriEnv
from cri.pod_tools import (
    READY_TIMEOUT,
    running_pod,
    start,
    wait_until,
)

LONG_LINE = 20000  # more than containerd's max_container_log_line_size (16384)
LOG_SPLIT = 16384


LOG_SCRIPT = (f'echo hello; echo oops >&2; printf partial; sleep 1; echo " done"; '
              f'head -c {LONG_LINE} /dev/zero | tr "\\0" x; echo; printf tail-no-newline')


def check_log_file(env: CriEnv, handler: str) -> None:
    """stdout/stderr reach log_directory/log_path in the CRI format: F lines, P pieces for a
    long line and for text without a final newline; exit status Completed."""
    started = datetime.now(UTC)
    with running_pod(env, handler, "logs") as pod:
        cid = start(env, pod, "printer", ["sh", "-c", LOG_SCRIPT])
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        assert (status.exit_code, status.reason) == (0, "Completed"), status
        assert pod.log_directory is not None
        assert status.log_path == str(pod.log_directory / "printer.log")
        records = logs.read(status.log_path)
    assert all(started <= r.time <= datetime.now(UTC) for r in records), records
    assert logs.lines(records, "stderr") == [b"oops"]
    assert logs.lines(records, "stdout") == [b"hello", b"partial done", b"x" * LONG_LINE,
                                             b"tail-no-newline"]
    stdout = [(r.tag, len(r.content)) for r in records if r.stream == "stdout"]
    assert stdout[2:] == [("P", LOG_SPLIT), ("F", LONG_LINE - LOG_SPLIT), ("P", 15)], stdout


def check_tty_log(env: CriEnv, handler: str) -> None:
    """A TTY container logs one stream, stdout, with the pty's CR LF stripped."""
    with running_pod(env, handler, "ttylog") as pod:
        cid = start(env, pod, "tty", ["sh", "-c", "echo to-stdout; echo to-stderr >&2"],
                    tty=True)
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        records = logs.read(status.log_path)
    assert {r.stream for r in records} == {"stdout"}
    assert logs.lines(records, "stdout") == [b"to-stdout", b"to-stderr"]


def check_reopen_log(env: CriEnv, handler: str) -> None:
    """After the log file is renamed, ReopenContainerLog makes new output go to a new file."""
    with running_pod(env, handler, "reopen") as pod:
        cid = start(env, pod, "ticker",
                    ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done"])
        log_path = Path(env.client.container_status(cid).status.log_path)
        wait_until("first ticks", lambda: log_path.is_file() and b"tick-2" in
                   log_path.read_bytes(), READY_TIMEOUT)
        log_path.rename(log_path.with_suffix(".log.1"))
        env.client.reopen_container_log(cid)
        wait_until("ticks in the new file", lambda: log_path.is_file() and
                   len(logs.read(log_path)) >= 2, 30)
    old = logs.read(log_path.with_suffix(".log.1"))
    new = logs.read(log_path)
    assert new[0].time >= old[-1].time


# --- termination message -----------------------------------------------------------------------

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE = "goodbye: 3 widgets left\n"


def check_termination_message(env: CriEnv, handler: str, host_dir: Path) -> None:
    """kubelet's terminationMessagePath: it mounts an empty host file at /dev/termination-log
    (CRI has no field for it) and, once the container exited, reads that host file itself.
    What the container wrote there must be in the host file when ContainerStatus says EXITED;
    containerd puts nothing of it in ContainerStatus.message (kubelet falls back to the file
    when message is empty)."""
    message_file = host_dir / "termination-log"
    message_file.touch(mode=0o666)
    mount = pb.Mount(container_path=TERMINATION_LOG, host_path=str(message_file))
    script = f"printf '{TERMINATION_MESSAGE.strip()}\\n' > {TERMINATION_LOG}; exit 2"
    with running_pod(env, handler, "termlog") as pod:
        cid = start(env, pod, "quitter", ["sh", "-c", script], mounts=[mount])
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        assert (status.exit_code, status.reason) == (2, "Error"), status
        assert status.message == "", status
        assert message_file.read_text() == TERMINATION_MESSAGE
        assert [m.container_path for m in status.mounts] == [TERMINATION_LOG]
