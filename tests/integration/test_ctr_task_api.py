"""The whole task API through `ctr` with the Bulkhead runtime: exec, terminals, stdin, signals,
pause/resume, metrics, update, OOM, binary loggers, volumes, containerd restarts and VM death.

Real containerd, real QEMU (TCG here), real guest. Each test keeps its VM count low: several
behaviours share one running container.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ctrtools import (
    RUNTIME,
    EventLog,
    PtySession,
    detached,
    exec_,
    metrics,
    run,
    task_row,
    uid,
    update_resources,
    wait_status,
)
from harness.containerd import PrivateContainerd

pytestmark = [pytest.mark.containerd, pytest.mark.vm]
SLEEPER = ("sh", "-c", 'trap "exit 42" TERM; while true; do sleep 1; done')


def only_on(containerd: PrivateContainerd, *versions: str) -> None:
    """Behaviours beyond the lifecycle basics run on one or two versions, to keep time."""
    if containerd.version not in versions:
        pytest.skip(f"covered on containerd {', '.join(versions)}")


# -- exec (all versions) ---------------------------------------------------------------------

def test_exec_output_status_events_and_errors(containerd: PrivateContainerd, demo_image: str,
                                              no_leaks: None) -> None:
    with EventLog(containerd) as events, detached(containerd, demo_image, *SLEEPER) as cid:
        res = exec_(containerd, cid, "sh", "-c", "echo to-out; echo to-err >&2; exit 3",
                    exec_id="e1")
        assert (res.returncode, res.stdout, res.stderr.strip()) == (3, "to-out\n", "to-err")

        t0 = time.monotonic()
        res = exec_(containerd, cid, "no-such-binary", exec_id="e2")
        assert res.returncode != 0 and time.monotonic() - t0 < 10
        assert "no-such-binary" in res.stderr and "not found" in res.stderr

        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda n: exec_(containerd, cid, "sh", "-c",
                                                    f"sleep 1; echo par-{n}; exit {n}",
                                                    exec_id=f"p{n}"), range(3)))
        assert [(r.returncode, r.stdout) for r in results] == [(n, f"par-{n}\n") for n in range(3)]

        # A child that outlives the exec and keeps its stdout open does not hold up its exit.
        t0 = time.monotonic()
        res = exec_(containerd, cid, "sh", "-c", "sleep 300 & echo parent-done", exec_id="bg")
        assert (res.returncode, res.stdout) == (0, "parent-done\n"), res.stderr
        assert time.monotonic() - t0 < 20

        ps = containerd.ctr("tasks", "ps", cid).stdout.splitlines()[1:]
        assert len(ps) >= 2  # the init shell and its sleep: guest processes
    evs = [(e.topic, e.body.get("exec_id") or e.body.get("id")) for e in events.events(cid)
           if e.topic.startswith("/tasks/exec") or e.body.get("id") == "e1"]
    assert evs[:3] == [("/tasks/exec-added", "e1"), ("/tasks/exec-started", "e1"),
                       ("/tasks/exit", "e1")]
    exit_e1 = next(e for e in events.events(cid) if e.body.get("id") == "e1")
    assert exit_e1.body["exit_status"] == 3


def test_exec_dies_with_init_and_duplicate_ids(containerd: PrivateContainerd, demo_image: str,
                                               no_leaks: None) -> None:
    only_on(containerd, "1.7", "2.1")
    with detached(containerd, demo_image, *SLEEPER) as cid:
        long = subprocess.Popen(containerd.ctr_argv("tasks", "exec", "--exec-id", "long", cid,
                                                    "sleep", "600"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while len(containerd.ctr("tasks", "ps", cid).stdout.splitlines()) < 4:
                assert time.monotonic() < deadline, "the exec never showed up in ctr task ps"
                time.sleep(0.2)
            dup = exec_(containerd, cid, "true", exec_id="long")
            assert dup.returncode != 0 and "already exists" in dup.stderr
            bad = exec_(containerd, cid, "true", exec_id="../escape")
            # ctr itself made its FIFOs one level up (its own path join); the shim refused.
            for leftover in Path("/run/containerd/fifo").glob("escape-std*"):
                leftover.unlink()
            assert bad.returncode != 0 and "invalid exec id" in bad.stderr
            containerd.ctr("tasks", "kill", "-s", "KILL", cid)
            _, err = long.communicate(timeout=30)
            assert long.returncode == 137, err  # killed with its container, as under runc
        finally:
            if long.poll() is None:
                long.kill()
                long.wait()


# -- terminals -------------------------------------------------------------------------------

def drive_shell(session: PtySession) -> None:
    """Type commands like a user: size, resize, Ctrl-C of a foreground job, exit status."""
    assert session.expect(b"# "), session.text()
    session.send(b"stty size; tty\r")
    assert session.expect(b"30 100") and session.expect(b"/dev/pts/"), session.text()
    session.resize(40, 120)
    time.sleep(0.5)
    session.send(b"stty size\r")
    assert session.expect(b"40 120"), session.text()
    session.send(b"sleep 300\r")
    time.sleep(1.0)
    session.send(b"\x03")  # Ctrl-C: SIGINT to the guest's foreground process
    session.send(b"echo interrupted=$?\r")
    assert session.expect(b"interrupted=130"), session.text()
    session.send(b"echo to-stderr >&2\r")
    assert session.expect(b"to-stderr"), session.text()  # a terminal carries stderr too
    session.send(b"exit 5\r")


def test_terminal_run_and_exec(containerd: PrivateContainerd, demo_image: str,
                               no_leaks: None) -> None:
    only_on(containerd, "1.6", "2.1")
    cid = uid("tty")
    session = PtySession(containerd.ctr_argv("run", "-t", "--runtime", RUNTIME, "--rm",
                                             demo_image, cid, "sh"))
    drive_shell(session)
    assert session.wait() == 5, session.text()
    with detached(containerd, demo_image, *SLEEPER) as cid:
        session = PtySession(containerd.ctr_argv("tasks", "exec", "-t", "--exec-id", "tty",
                                                 cid, "sh"))
        drive_shell(session)
        assert session.wait() == 5, session.text()


# -- stdin -----------------------------------------------------------------------------------

def test_stdin_data_eof_and_unread_stdin(containerd: PrivateContainerd, demo_image: str,
                                         no_leaks: None) -> None:
    only_on(containerd, "1.7", "2.1")
    code, out, err = run(containerd, demo_image, "sh", "-c", "cat; echo eof-seen",
                         input="line one\nline two\n")
    assert (code, out) == (0, "line one\nline two\neof-seen\n"), err
    # A process that never reads stdin exits while the client still has data to send.
    yes = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    try:
        res = subprocess.run(containerd.ctr_argv("run", "--runtime", RUNTIME, "--rm",
                                                 demo_image, uid("noread"), "echo", "done"),
                             stdin=yes.stdout, capture_output=True, text=True, timeout=120)
    finally:
        yes.kill()
        yes.wait()
    assert (res.returncode, res.stdout) == (0, "done\n"), res.stderr
    with detached(containerd, demo_image, *SLEEPER) as cid:
        res = exec_(containerd, cid, "sh", "-c", "wc -c", input="x" * 100_000)
        assert (res.returncode, res.stdout.strip()) == (0, "100000"), res.stderr


# -- signals ---------------------------------------------------------------------------------

def test_signals_to_init_exec_and_all(containerd: PrivateContainerd, demo_image: str,
                                      no_leaks: None) -> None:
    only_on(containerd, "1.7")
    with detached(containerd, demo_image, "sh", "-c",
                  'trap "echo got-usr1" USR1; trap "exit 42" TERM; '
                  "while true; do sleep 0.2; done") as cid:
        ex = subprocess.Popen(containerd.ctr_argv("tasks", "exec", "--exec-id", "victim", cid,
                                                  "sleep", "600"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        containerd.ctr("tasks", "kill", "--exec-id", "victim", "-s", "SIGTERM", cid)
        ex.communicate(timeout=30)
        assert ex.returncode == 143
        missing = containerd.ctr("tasks", "kill", "--exec-id", "ghost", cid, check=False)
        assert missing.returncode != 0 and "not found" in missing.stderr
        containerd.ctr("tasks", "kill", "-s", "SIGUSR1", cid)
        assert task_row(containerd, cid)[2] == "RUNNING"  # type: ignore[index]
        containerd.ctr("tasks", "kill", "--all", "-s", "SIGKILL", cid)
        wait_status(containerd, cid, "STOPPED", timeout=30)
        res = containerd.ctr("tasks", "rm", cid, check=False)
        assert "137" in res.stderr  # ctr reports the non-zero exit of the init


# -- pause / resume, metrics, update ----------------------------------------------------------

def test_pause_resume_metrics_update(containerd: PrivateContainerd, demo_image: str,
                                     no_leaks: None) -> None:
    only_on(containerd, "1.7")
    # The cgroup mount lets the container read its own cpu.max (ctr's spec has none).
    opts = ("--memory-limit", str(256 << 20),
            "--mount", "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro")
    with EventLog(containerd) as events, detached(containerd, demo_image, *SLEEPER,
                                                  opts=opts) as cid:
        before = metrics(containerd, cid)
        assert before["memory.usage"] > 0 and before["pids.current"] >= 1
        assert before["memory.usage_limit"] == 256 << 20  # the spec's own limit, applied
        containerd.ctr("tasks", "pause", cid)
        assert task_row(containerd, cid)[2] == "PAUSED"  # type: ignore[index]
        res = exec_(containerd, cid, "true")
        assert res.returncode != 0 and "paused" in res.stderr
        containerd.ctr("tasks", "resume", cid)
        assert task_row(containerd, cid)[2] == "RUNNING"  # type: ignore[index]
        assert exec_(containerd, cid, "true").returncode == 0
        update_resources(containerd, cid, {"memory": {"limit": 96 << 20},
                                           "cpu": {"quota": 50000, "period": 100000}})
        after = metrics(containerd, cid)
        assert after["memory.usage_limit"] == 96 << 20
        res = exec_(containerd, cid, "sh", "-c",
                    "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/cpu.max")
        assert res.stdout.split() == ["50000", "100000"], res.stderr
        assert after["cpu.usage_usec"] >= before["cpu.usage_usec"]
    topics = [e.topic for e in events.events(cid)]
    assert topics.index("/tasks/paused") < topics.index("/tasks/resumed")


def test_oom_kill_is_reported_before_the_exit(containerd: PrivateContainerd, demo_image: str,
                                              no_leaks: None) -> None:
    only_on(containerd, "2.1")
    cid = uid("oom")
    with EventLog(containerd) as events:
        res = containerd.ctr("run", "--runtime", RUNTIME, "--rm", "--memory-limit",
                             str(32 << 20), demo_image, cid, "sh", "-c",
                             'echo start; x=$(head -c 200000000 /dev/zero | tr "\\0" a); '
                             "echo survived", check=False, timeout=120)
    assert res.returncode == 137 and "survived" not in res.stdout, res.stderr
    topics = [e.topic for e in events.events(cid)]
    assert "/tasks/oom" in topics and topics.index("/tasks/oom") < topics.index("/tasks/exit")


# -- loggers and volumes ---------------------------------------------------------------------

LOGGER = """#!/bin/sh
# A binary:// logger: stdout on fd 3, stderr on fd 4, readiness on fd 5.
out=$2
echo "env $CONTAINER_ID $CONTAINER_NAMESPACE args $*" > "$out"
exec 5>&-
sed 's/^/OUT /' <&3 >> "$out" &
sed 's/^/ERR /' <&4 >> "$out" &
wait
"""


def test_binary_logger(containerd: PrivateContainerd, demo_image: str, no_leaks: None,
                       tmp_path: Path) -> None:
    only_on(containerd, "1.6")
    logger = tmp_path / "logger.sh"
    logger.write_text(LOGGER)
    logger.chmod(0o755)
    log = tmp_path / "log.txt"
    cid = uid("blog")
    res = containerd.ctr("run", "--runtime", RUNTIME, "--rm", "--log-uri",
                         f"binary://{logger}?out={log}", demo_image, cid, "sh", "-c",
                         "echo one; echo two >&2; echo three", timeout=120)
    assert res.stdout == ""
    deadline = time.monotonic() + 10
    while log.read_text().count("\n") < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = log.read_text().splitlines()
    assert lines[0] == f"env {cid} {containerd.namespace} args out {log}"
    assert [ln for ln in lines[1:] if ln.startswith("OUT")] == ["OUT one", "OUT three"]
    assert [ln for ln in lines[1:] if ln.startswith("ERR")] == ["ERR two"]
    bad = containerd.ctr("run", "--runtime", RUNTIME, "--rm", "--log-uri",
                         "binary:///nonexistent/logger", demo_image, uid("blog"), "true",
                         check=False, timeout=120)
    assert bad.returncode != 0 and "/nonexistent/logger" in bad.stderr


def test_bind_mounts(containerd: PrivateContainerd, demo_image: str, no_leaks: None,
                     tmp_path: Path) -> None:
    only_on(containerd, "1.7")
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in.txt").write_text("from-host\n")
    ro_file = tmp_path / "ro.txt"
    ro_file.write_text("read-only\n")
    code, out, err = run(containerd, demo_image, "sh", "-c",
                         "cat /data/in.txt /etc/ro.txt; echo from-guest > /data/out.txt; "
                         "echo x 2>/dev/null > /etc/ro.txt || echo refused",
                         opts=("--mount", f"type=bind,src={vol},dst=/data,options=rbind:rw",
                               "--mount", f"type=bind,src={ro_file},dst=/etc/ro.txt,"
                                          "options=rbind:ro"))
    assert (code, out) == (0, "from-host\nread-only\nrefused\n"), err
    assert (vol / "out.txt").read_text() == "from-guest\n"
    assert ro_file.read_text() == "read-only\n"
    code, _, err = run(containerd, demo_image, "true",
                       opts=("--mount", f"type=bind,src={tmp_path}/missing,dst=/data,"
                                        "options=rbind:rw"))
    assert code != 0 and f"{tmp_path}/missing" in err and "does not exist" in err
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "app.sock"))
    try:
        code, _, err = run(containerd, demo_image, "true",
                           opts=("--mount", f"type=bind,src={tmp_path}/app.sock,"
                                            "dst=/app.sock,options=rbind:rw"))
    finally:
        sock.close()
    assert code != 0 and "app.sock" in err and "socket" in err


# -- failures around the shim ----------------------------------------------------------------

def test_containerd_restart_keeps_tasks(containerd: PrivateContainerd, demo_image: str,
                                        no_leaks: None) -> None:
    only_on(containerd, "1.6", "2.1")
    with detached(containerd, demo_image, *SLEEPER) as cid, \
            detached(containerd, demo_image, *SLEEPER, prefix="exited") as exited:
        containerd.ctr("tasks", "kill", "-s", "KILL", exited)
        wait_status(containerd, exited, "STOPPED")
        containerd.crash_and_restart()
        assert wait_status(containerd, cid, "RUNNING", timeout=30)
        # 2.x (and 1.7) find no processes in the exited task and delete it; its shim must exit.
        row = task_row(containerd, exited)
        assert row is None or row[2] == "STOPPED"
        res = exec_(containerd, cid, "echo", "after-restart")
        assert (res.returncode, res.stdout) == (0, "after-restart\n"), res.stderr
        attach = subprocess.Popen(containerd.ctr_argv("tasks", "attach", cid),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        containerd.ctr("tasks", "kill", cid)  # SIGTERM: the init traps it and exits 42
        attach.communicate(timeout=60)
        assert attach.returncode == 42  # Wait, issued after the restart, gets the status


def test_vm_death_reports_every_process_within_two_seconds(
        containerd: PrivateContainerd, demo_image: str, no_leaks: None) -> None:
    only_on(containerd, "1.7")
    with detached(containerd, demo_image, *SLEEPER) as cid:
        long = subprocess.Popen(containerd.ctr_argv("tasks", "exec", "--exec-id", "long", cid,
                                                    "sleep", "600"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        qemu = int(task_row(containerd, cid)[1])  # type: ignore[index]
        t0 = time.monotonic()
        os.kill(qemu, signal.SIGKILL)
        wait_status(containerd, cid, "STOPPED", timeout=10)
        long.communicate(timeout=10)
        took = time.monotonic() - t0
        assert long.returncode == 137
        assert took < 2.0, f"exits reported {took:.2f} s after the VM died"
        # The broken agent link may report the exits before the shim reaps QEMU and says why.
        deadline = time.monotonic() + 5
        while not any("VM died" in line for line in containerd.log_lines(cid)):
            assert time.monotonic() < deadline, "the shim log never named the VM's death"
            time.sleep(0.1)
        kill = containerd.ctr("tasks", "kill", cid, check=False)
        assert "not found" in kill.stderr


def test_checkpoint_is_refused_clearly(containerd: PrivateContainerd, demo_image: str,
                                       no_leaks: None) -> None:
    only_on(containerd, "1.6")
    with detached(containerd, demo_image, *SLEEPER) as cid:
        res = containerd.ctr("tasks", "checkpoint", cid, check=False)
        assert res.returncode != 0 and "cannot checkpoint" in res.stderr
