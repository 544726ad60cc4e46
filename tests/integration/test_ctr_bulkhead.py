"""`ctr` with the Bulkhead runtime against real containerd 1.6, 1.7 and 2.1, QEMU and the guest.

Every test boots real microVMs (TCG here) and checks that nothing is left behind.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
from pathlib import Path

import pytest
from bulkhead.demo import procs
from ctrtools import GUEST, RUNTIME, qemu_pids, run, task_row, uid, wait_status
from harness.containerd import PrivateContainerd

pytestmark = [pytest.mark.containerd, pytest.mark.vm]


@pytest.fixture(autouse=True)
def _guest_image() -> None:
    if not (GUEST / "vmlinuz").is_file():
        pytest.fail(f"no guest image in {GUEST} (run `make install`)")



def test_stdout_stderr_and_guest_kernel(containerd: PrivateContainerd, demo_image: str,
                                        no_leaks: None) -> None:
    code, out, err = run(containerd, demo_image, "sh", "-c",
                         "echo out-line; echo err-line >&2; uname -r")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "out-line"
    assert "err-line" in err
    assert lines[1] != os.uname().release  # a guest kernel, not the host's


# The container's sh is PID 1 of its pid namespace and ignores its own signals (as under runc),
# so the signal deaths are of a child whose status the shell passes on.
@pytest.mark.parametrize("cmd,want", [("exit 7", 7), ('sh -c "kill -9 \\$\\$"; exit $?', 137),
                                      ('sh -c "kill -15 \\$\\$"; exit $?', 143)])
def test_exit_codes(containerd: PrivateContainerd, demo_image: str, no_leaks: None,
                    cmd: str, want: int) -> None:
    code, _, err = run(containerd, demo_image, "sh", "-c", cmd)
    assert code == want, err


def test_detached_lifecycle_one_qemu(containerd: PrivateContainerd, demo_image: str,
                                     no_leaks: None) -> None:
    before = qemu_pids()
    a, b = uid("det"), uid("det")
    try:
        # PID 1 of a pid namespace only dies of signals it handles (or SIGKILL): trap TERM.
        containerd.ctr("run", "--runtime", RUNTIME, "-d", demo_image, a, "sh", "-c",
                       'trap "exit 0" TERM; while true; do sleep 1; done')
        containerd.ctr("run", "--runtime", RUNTIME, "-d", demo_image, b, "sleep", "600")
        row = wait_status(containerd, a, "RUNNING")
        assert int(row[1]) > 0 and procs.pid_alive(int(row[1]))
        assert len(qemu_pids() - before) == 2  # exactly one VM per running container
        containerd.ctr("tasks", "kill", a)  # SIGTERM
        assert wait_status(containerd, a, "STOPPED")
        containerd.ctr("tasks", "kill", "-s", "KILL", b)
        wait_status(containerd, b, "STOPPED")
        for cid in (a, b):
            containerd.ctr("tasks", "rm", cid)
            containerd.ctr("containers", "rm", cid)
        assert qemu_pids() - before == set()
    finally:
        for cid in (a, b):
            containerd.ctr("tasks", "rm", "-f", cid, check=False)
            containerd.ctr("containers", "rm", cid, check=False)


def test_sigkilled_init_exits_137(containerd: PrivateContainerd, demo_image: str,
                                  no_leaks: None) -> None:
    """ctr run (attached) reports 137 when the container init dies of SIGKILL."""
    cid = uid("sigkill")
    attached = subprocess.Popen(
        containerd.ctr_argv("run", "--runtime", RUNTIME, "--rm", demo_image, cid, "sleep", "600"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_status(containerd, cid, "RUNNING")
        containerd.ctr("tasks", "kill", "-s", "KILL", cid)
        _, err = attached.communicate(timeout=60)
        assert attached.returncode == 137, err
    finally:
        if attached.poll() is None:
            attached.kill()
            attached.wait()
        containerd.ctr("tasks", "rm", "-f", cid, check=False)
        containerd.ctr("containers", "rm", cid, check=False)


def test_null_io(containerd: PrivateContainerd, demo_image: str, no_leaks: None) -> None:
    code, out, _ = run(containerd, demo_image, "sh", "-c", "echo hidden; exit 3",
                       opts=("--null-io",))
    assert code == 3 and out == ""


def test_log_uri_file(containerd: PrivateContainerd, demo_image: str, no_leaks: None,
                      tmp_path: Path) -> None:
    log = tmp_path / "sub" / "out.log"
    log.parent.mkdir()
    log.write_text("previous\n")
    code, out, _ = run(containerd, demo_image, "sh", "-c", "echo to-out; echo to-err >&2",
                       opts=("--log-uri", f"file://{log}"))
    assert code == 0 and out == ""
    lines = log.read_text().splitlines()
    assert lines[0] == "previous" and set(lines[1:]) == {"to-out", "to-err"}


def test_image_filesystem_and_snapshot_writes(containerd: PrivateContainerd, demo_image: str,
                                              no_leaks: None) -> None:
    cid = uid("fs")
    marker = f"written-in-guest-{cid}"
    try:
        containerd.ctr("run", "--runtime", RUNTIME, "-d", demo_image, cid, "sh", "-c",
                       f"test -x /bin/busybox && echo {marker} > /marker && sleep 600")
        wait_status(containerd, cid, "RUNNING")
        pattern = str(containerd.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
                      / "*" / "fs" / "marker")
        deadline = time.monotonic() + 30
        found: list[str] = []
        while not found and time.monotonic() < deadline:
            found = [p for p in glob.glob(pattern) if Path(p).read_text().strip() == marker]
            time.sleep(0.2)
        assert found, "the file written in the guest is not in the snapshot's upper dir"
    finally:
        containerd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
        containerd.ctr("tasks", "rm", "-f", cid, check=False)
        containerd.ctr("containers", "rm", cid, check=False)


def test_missing_executable_is_a_clear_error(containerd: PrivateContainerd, demo_image: str,
                                             no_leaks: None) -> None:
    code, _, err = run(containerd, demo_image, "no-such-binary")
    assert code != 0
    assert "no-such-binary" in err and "not found" in err.lower()


def test_bad_cwd_is_a_clear_error(containerd: PrivateContainerd, demo_image: str,
                                  no_leaks: None) -> None:
    # Like runc, a missing cwd is created; one that cannot be (under a file) is an error.
    code, _, err = run(containerd, demo_image, "true", opts=("--cwd", "/etc/passwd/sub"))
    assert code != 0 and "/etc/passwd/sub" in err, err


def test_twenty_sequential_runs_leave_nothing(containerd: PrivateContainerd, demo_image: str,
                                              no_leaks: None) -> None:
    if containerd.version != "1.6":
        pytest.skip("the 20-run soak runs once, on containerd 1.6 (each run boots a TCG VM)")
    for i in range(20):
        code, out, err = run(containerd, demo_image, "echo", f"run-{i}")
        assert (code, out.strip()) == (0, f"run-{i}"), err


def config_file(tmp_path: Path, **settings: object) -> Path:
    path = tmp_path / "bulkhead.toml"
    path.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in settings.items()))
    return path


def test_corrupt_kernel_reports_console_or_stderr(containerd: PrivateContainerd,
                                                  demo_image: str, no_leaks: None,
                                                  tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "vmlinuz").write_bytes(b"this is not a kernel" * 100)
    for name in ("initrd.img", "rootfs.erofs"):
        (guest / name).symlink_to(GUEST / name)
    cfg = config_file(tmp_path, guest_dir=str(guest), boot_timeout=20.0)
    code, _, err = run(containerd, demo_image, "true",
                       opts=("--runtime-config-path", str(cfg)))
    assert code != 0
    assert "exited" in err or "console" in err or "stderr" in err, err


def test_missing_qemu_is_named(containerd: PrivateContainerd, demo_image: str,
                               no_leaks: None, tmp_path: Path) -> None:
    cfg = config_file(tmp_path, qemu_binary="/nonexistent/qemu-system-x86_64")
    code, _, err = run(containerd, demo_image, "true",
                       opts=("--runtime-config-path", str(cfg)))
    assert code != 0 and "/nonexistent/qemu-system-x86_64" in err


def test_silent_agent_names_channel_and_timeout(containerd: PrivateContainerd,
                                                demo_image: str, no_leaks: None,
                                                tmp_path: Path) -> None:
    # The agent listens on vsock (which this host lacks) and never opens the serial ports.
    cfg = config_file(tmp_path, kernel_params="bulkhead.channel=vsock", boot_timeout=8.0)
    code, _, err = run(containerd, demo_image, "true",
                       opts=("--runtime-config-path", str(cfg)))
    assert code != 0
    assert "bulkhead.ctl" in err and "8" in err, err


def test_bad_runtime_config_is_named(containerd: PrivateContainerd, demo_image: str,
                                     no_leaks: None, tmp_path: Path) -> None:
    cfg = config_file(tmp_path, memory_mib="lots")
    code, _, err = run(containerd, demo_image, "true",
                       opts=("--runtime-config-path", str(cfg)))
    assert code != 0 and "memory_mib" in err and str(cfg) in err


def sandbox_state(containerd: PrivateContainerd, cid: str) -> dict[str, object]:
    import json

    path = Path("/run/bulkhead") / containerd.namespace / cid / "state.json"
    return dict(json.loads(path.read_text()))


@pytest.mark.parametrize("victim", ["shim", "qemu"])
def test_killed_shim_or_vm_leaves_nothing(containerd: PrivateContainerd, demo_image: str,
                                          no_leaks: None, victim: str) -> None:
    """SIGKILL of the shim daemon or of QEMU: the task stops and cleanup removes everything."""
    cid = uid(f"kill{victim}")
    try:
        containerd.ctr("run", "--runtime", RUNTIME, "-d", demo_image, cid, "sleep", "600")
        row = wait_status(containerd, cid, "RUNNING")
        pid = int(str(sandbox_state(containerd, cid)["shim_pid"])) if victim == "shim" \
            else int(row[1])
        os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while (r := task_row(containerd, cid)) is not None and r[2] != "STOPPED":
            assert time.monotonic() < deadline, f"{cid} still {r} after its {victim} died"
            time.sleep(0.2)
        containerd.ctr("tasks", "rm", "-f", cid, check=False)
        containerd.ctr("containers", "rm", cid)
    finally:
        containerd.ctr("tasks", "rm", "-f", cid, check=False)
        containerd.ctr("containers", "rm", cid, check=False)
