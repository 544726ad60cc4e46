"""Layered container roots (docs/architecture.md, "Container root filesystems") through `ctr`,
real containerd, QEMU and the guest: what a container writes, removes and replaces in its root
is in containerd's snapshot when its exit is seen, a task started again sees it, and a VM that
dies keeps what was written back before."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest
from ctrtools import GUEST, RUNTIME, qemu_pids, uid, wait_status
from harness.containerd import PrivateContainerd

pytestmark = [pytest.mark.containerd, pytest.mark.vm]

WRITE_BACK_TIMEOUT = 30.0  # passes run every 10 s while a container runs
# First run: change the root in every way a diff can show. Second run (the same container's
# next task, whose snapshot has content): show what it finds.
SCRIPT = """
if [ -e /made ]; then
  cat /made /d/e/f; tail -n 1 /etc/passwd; readlink /link
  test -e /etc/hostname || echo hostname-gone
  ls /usr/share/replaced
  exit 0
fi
echo new > /made && mkdir -p /d/e && echo deep > /d/e/f
echo app:x:1000:1000::/:/bin/sh >> /etc/passwd
rm /etc/hostname && ln -s /made /link && chmod 600 /etc/group
mkdir -p /usr/share/replaced && touch /usr/share/replaced/old && sync
mkdir -p /tmp/gone && touch /tmp/gone/x && rm -r /tmp/gone
echo written
"""


@pytest.fixture(autouse=True)
def _guest_image() -> None:
    if not (GUEST / "vmlinuz").is_file():
        pytest.fail(f"no guest image in {GUEST} (run `make install`)")


def snapshot_upper(ctd: PrivateContainerd, key: str) -> Path:
    """The upper dir of a container's overlay snapshot, from `ctr snapshots mounts`."""
    out = ctd.ctr("snapshots", "mounts", "/mnt", key).stdout
    for opt in out.split()[-1].split(","):
        if opt.startswith("upperdir="):
            return Path(opt.removeprefix("upperdir="))
    raise AssertionError(f"no upperdir in {out!r}")


def remove(ctd: PrivateContainerd, cid: str) -> None:
    ctd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
    ctd.ctr("tasks", "rm", "-f", cid, check=False)
    ctd.ctr("containers", "rm", cid, check=False)


def test_writes_removals_and_replacements_are_in_the_snapshot_at_exit(
        containerd: PrivateContainerd, demo_image: str, no_leaks: None) -> None:
    cid = uid("layers")
    try:
        first = containerd.ctr("run", "--runtime", RUNTIME, demo_image, cid, "sh", "-c",
                               SCRIPT, timeout=180)
        assert first.stdout.strip() == "written", first
        upper = snapshot_upper(containerd, cid)
        assert (upper / "made").read_text() == "new\n"
        assert (upper / "d" / "e" / "f").read_text() == "deep\n"
        assert (upper / "etc" / "passwd").read_text().endswith("app:x:1000:1000::/:/bin/sh\n")
        hostname = os.lstat(upper / "etc" / "hostname")  # the host overlay's whiteout
        assert stat.S_ISCHR(hostname.st_mode) and hostname.st_rdev == 0
        assert os.readlink(upper / "link") == "/made"
        assert stat.S_IMODE((upper / "etc" / "group").stat().st_mode) == 0o600
        assert not (upper / "tmp" / "gone").exists()
        assert not [p for p in upper.rglob(".bulkhead-*")]

        # The same container again: the snapshot has content, so this task reads it as is.
        containerd.ctr("tasks", "rm", cid, check=False)  # (ctr run removed it already)
        again = containerd.ctr("tasks", "start", cid, timeout=180)
        assert again.stdout.split() == ["new", "deep", "app:x:1000:1000::/:/bin/sh", "/made",
                                        "hostname-gone", "old"], again
    finally:
        remove(containerd, cid)


@pytest.mark.parametrize("containerd", ["1.7"], indirect=True)
def test_a_dead_vm_keeps_what_was_written_back(containerd: PrivateContainerd,
                                               demo_image: str, no_leaks: None) -> None:
    cid = uid("crash")
    before = qemu_pids()
    try:
        containerd.ctr("run", "--runtime", RUNTIME, "-d", demo_image, cid, "sh", "-c",
                       "echo early > /early && exec sleep 600", timeout=120)
        wait_status(containerd, cid, "RUNNING")
        upper = snapshot_upper(containerd, cid)
        deadline = time.monotonic() + WRITE_BACK_TIMEOUT
        while not (upper / "early").exists():
            assert time.monotonic() < deadline, "/early was never written back"
            time.sleep(0.5)
        (vm,) = qemu_pids() - before
        os.kill(vm, signal.SIGKILL)
        wait_status(containerd, cid, "STOPPED")
        assert (upper / "early").read_text() == "early\n"
    finally:
        remove(containerd, cid)
