"""`bulkhead shell` and `bulkhead logs` against live sandboxes (containerd 1.7), the guest
console ring under a flood, and shim log lines that name their sandbox and container."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from bulkhead.paths import sandbox_dir
from ctrtools import PtySession, detached
from harness.containerd import PrivateContainerd

BULKHEAD = "/usr/local/bin/bulkhead"
CAP = 1 << 20  # vmm/console.py CAP_BYTES


# containerd 1.7 alone: conftest's `containerd`, which demo_image and no_leaks use too.
pytestmark = pytest.mark.parametrize("containerd", ["1.7"], ids=["containerd1.7"], indirect=True)


def bulkhead(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BULKHEAD, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)


def test_shell_runs_outside_the_containers(containerd: PrivateContainerd, demo_image: str,
                                           debug_config: tuple[str, ...],
                                           no_leaks: None) -> None:
    with detached(containerd, demo_image, "sleep", "600", opts=debug_config) as cid:
        # The VM's root sees every container's cgroup; a container sees only its own.
        res = bulkhead("shell", cid, "-n", containerd.namespace, "-c",
                       "ls /sys/fs/cgroup/bulkhead; echo uid=$(id -u); exit 3")
        assert res.returncode == 3, res
        assert cid in res.stdout and "uid=0" in res.stdout, res.stdout
        # Interactively, through a terminal, twice in a row (sessions are reusable).
        for _ in range(2):
            term = PtySession([BULKHEAD, "shell", cid, "-n", containerd.namespace])
            assert term.expect(b"bulkhead-vm# "), term.text()  # typed-ahead input is flushed
            term.send(b"echo $((6 * 7))\n")
            assert term.expect(b"42"), term.text()
            term.resize(40, 120)  # SIGWINCH: passed on to the guest pty
            term.send(b"stty size\n")
            assert term.expect(b"40 120"), term.text()
            term.send(b"exit 5\n")
            assert term.wait() == 5, term.text()


def test_shell_is_off_by_default_and_root_only(containerd: PrivateContainerd, demo_image: str,
                                               no_leaks: None) -> None:
    with detached(containerd, demo_image, "sleep", "600") as cid:
        res = bulkhead("shell", cid, "-c", "true")
        assert res.returncode == 1 and "debug shell is off" in res.stderr, res
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              BULKHEAD, "shell", cid, "-c", "true"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 1 and "only root" in res.stderr, res
    res = bulkhead("shell", "no-such-sandbox", "-c", "true")
    assert res.returncode == 1 and "no sandbox 'no-such-sandbox'" in res.stderr


def test_logs_and_console_ring(containerd: PrivateContainerd, demo_image: str,
                               debug_config: tuple[str, ...], no_leaks: None) -> None:
    with detached(containerd, demo_image, "sleep", "600", opts=debug_config) as cid:
        res = bulkhead("logs", cid, "--shim", "--tail", "200")
        assert res.returncode == 0, res
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("time=")]
        assert lines and all(f"sandbox={cid}" in ln for ln in lines), res.stdout
        assert any(f"container={cid}" in ln for ln in lines), res.stdout
        # 1.6 MB onto the serial console: the ring rotates, each file at most 1 MiB, newest last.
        flood = ("i=0; while [ $i -lt 1600 ]; do echo \"console line $i $(printf '%01000d' 0)\";"
                 " i=$((i+1)); done > /dev/ttyS0; echo done > /dev/ttyS0")
        res = bulkhead("shell", cid, "-c", flood, timeout=240)
        assert res.returncode == 0, res
        state = Path(sandbox_dir(containerd.namespace, cid))
        sizes = [os.path.getsize(p) for p in (state / "console.log", state / "console.log.1")]
        assert all(size <= CAP for size in sizes) and sum(sizes) > CAP, sizes
        res = bulkhead("logs", cid, "--console", "--tail", "2")
        assert res.stdout.rstrip().endswith("done"), res.stdout[-500:]
        assert "console line 1599" in res.stdout, res.stdout[-500:]
