"""PID 1 housekeeping pieces that can be checked on the host: cgroup helpers and loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bulkhead_agent import cgroup


def test_enable_controllers_writes_each_available_one(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    written: list[str] = []
    control = tmp_path / "cgroup.subtree_control"
    control.write_text("")
    enabled = []
    for name in ("memory", "pids", "hugetlb"):
        enabled += cgroup.enable_controllers(str(tmp_path), (name,))
        written.append(control.read_text())
    assert enabled == ["memory", "pids"]
    assert written == ["+memory", "+pids", "+pids"]


def test_enable_controllers_without_cgroup2(tmp_path: Path) -> None:
    assert cgroup.enable_controllers(str(tmp_path / "none")) == []


def test_cgroup_of_and_pids_in(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text("0::/pods/c1\n")
    assert cgroup.cgroup_of(42, str(proc)) == "/pods/c1"
    assert cgroup.cgroup_of(43, str(proc)) is None
    root = tmp_path / "cg"
    (root / "pods" / "c1" / "sub").mkdir(parents=True)
    (root / "pods" / "c1" / "cgroup.procs").write_text("10\n11\n")
    (root / "pods" / "c1" / "sub" / "cgroup.procs").write_text("12\n")
    assert sorted(cgroup.pids_in("/pods/c1", str(root))) == [10, 11, 12]
    with pytest.raises(OSError):
        cgroup.pids_in("/pods/gone", str(root))


def test_a_container_cgroup_is_never_the_root_nor_the_agents(tmp_path: Path) -> None:
    """kill_all on the agent's own cgroup would end the agent (and, on a development host, the
    session that runs it); on the root it is meaningless."""
    proc = tmp_path / "proc"
    own = cgroup.cgroup_of(os.getpid()) or "/agent"
    for pid, line in ((os.getpid(), own), (50, "/"), (51, own), (52, "/pods/c2")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(f"0::{line}\n")
    assert [cgroup.container_cgroup_of(p, str(proc)) for p in (50, 51, 52, 53)] == [
        None, None, "/pods/c2", None]


def test_kill_all_never_creates_a_file(tmp_path: Path) -> None:
    """A directory that is not a cgroup (a tmpfs, a host's v1 /sys/fs/cgroup) stays as it was."""
    assert cgroup.kill_all("/", str(tmp_path)) is False
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "cgroup.kill").write_text("")
    assert cgroup.kill_all("/c1", str(tmp_path)) is True
    assert (tmp_path / "c1" / "cgroup.kill").read_text() == "1"


def test_cgroup_of_self_is_v2_path() -> None:
    path = cgroup.cgroup_of(os.getpid())
    if path is None:
        pytest.skip("no cgroup v2 here")
    assert path.startswith("/")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) for a private network namespace")
def test_loopback_up_in_a_fresh_netns() -> None:
    code = ("from bulkhead_agent.system import loopback_up, IFF_UP\n"
            "flags = lambda: int(open('/sys/class/net/lo/flags').read(), 16)\n"
            "assert not flags() & IFF_UP\n"
            "loopback_up(); loopback_up()\n"
            "assert flags() & IFF_UP\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(["unshare", "--net", "--mount", "sh", "-c",
                             "mount -t sysfs sysfs /sys && exec \"$0\" -c \"$1\"",
                             sys.executable, code], env=env, capture_output=True, text=True)
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip(f"cannot create namespaces here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
