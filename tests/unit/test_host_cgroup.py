"""The pod's host cgroup: OCI cgroupsPath forms, hierarchies, join and removal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bulkhead.sandbox import host_cgroup
from bulkhead.sandbox.host_cgroup import HostCgroupError


@pytest.mark.parametrize(("given", "want"), [
    ("/kubepods/burstable/pod1/abc", "/kubepods/burstable/pod1/abc"),
    ("bulkhead-test/x/abc", "/bulkhead-test/x/abc"),
    ("kubepods-burstable-pod1.slice:cri-containerd:abc",
     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/"
     "cri-containerd-abc.scope"),
    (":cri-containerd:abc", "/system.slice/cri-containerd-abc.scope"),
    ("-.slice::abc", "/abc.scope"),
])
def test_relative_path(given: str, want: str) -> None:
    assert host_cgroup.relative_path(given) == want


@pytest.mark.parametrize("bad", ["/", "a:b", "x.slice:p:", "a--b.slice:p:n", "a/b:p:n",
                                 "x.slice:p:../../../etc", "x.slice:../..:n", "x.slice:p:..",
                                 "/kubepods/a\nb"])
def test_bad_paths_are_named(bad: str) -> None:
    with pytest.raises(HostCgroupError, match="cgroupsPath|slice"):
        host_cgroup.relative_path(bad)


def test_v1_hierarchies_skip_cpuset(tmp_path: Path) -> None:
    for c in ("cpu,cpuacct", "memory", "cpuset", "pids"):
        (tmp_path / c).mkdir()
    dirs = host_cgroup.cgroup_dirs("/pods/p1", str(tmp_path))
    assert dirs == [str(tmp_path / c / "pods/p1") for c in ("cpu,cpuacct", "memory", "pids")]


def test_join_and_remove_on_unified(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    dirs = host_cgroup.cgroup_dirs("/pods/p1", str(tmp_path))
    assert dirs == [str(tmp_path / "pods/p1")]
    host_cgroup.join(dirs, 4242)
    assert (tmp_path / "pods/p1/cgroup.procs").read_text() == "4242"
    os.unlink(tmp_path / "pods/p1/cgroup.procs")  # a real cgroupfs has no files to remove
    assert host_cgroup.remove(dirs) == []
    assert not (tmp_path / "pods/p1").exists() and (tmp_path / "pods").is_dir()
    assert host_cgroup.remove(dirs) == []  # idempotent


def test_join_failure_names_the_directory(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    (tmp_path / "pods").write_text("a file, not a directory")
    with pytest.raises(HostCgroupError, match=r"host cgroup .*pods/p1"):
        host_cgroup.join(host_cgroup.cgroup_dirs("/pods/p1", str(tmp_path)), 1)
