"""The test harness proven with runc: private containerd 1.6, 1.7 and 2.1 run the demo image,
report exit codes, manage detached tasks, and leave nothing behind."""

from __future__ import annotations

import secrets
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from bulkhead.demo import procs
from bulkhead.demo.cli import run_demo
from bulkhead.sandbox.mounts import mount_points_under
from harness.containerd import INSTALLS, ContainerdConfig, PrivateContainerd, available_versions
from leaks import LeakBaseline, assert_no_leaks

pytestmark = pytest.mark.containerd
DEMO_IMAGE = "docker.io/bulkhead/demo:latest"
RUNTIME_TYPE = "io.containerd.bulkhead.v2"


def unique_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class TaskRow:
    """One row of `ctr task ls`."""

    task_id: str
    pid: int
    status: str


def list_tasks(instance: PrivateContainerd) -> dict[str, TaskRow]:
    rows = instance.ctr("tasks", "ls").stdout.splitlines()[1:]
    tasks = {}
    for row in rows:
        fields = row.split()
        if len(fields) >= 3:
            tasks[fields[0]] = TaskRow(fields[0], int(fields[1]), fields[2])
    return tasks


def wait_for_status(instance: PrivateContainerd, task_id: str, status: str) -> TaskRow:
    deadline = time.monotonic() + 15
    while True:
        row = list_tasks(instance).get(task_id)
        if (row and row.status == status) or time.monotonic() > deadline:
            assert row is not None and row.status == status, f"{task_id}: {row}"
            return row
        time.sleep(0.1)


def test_instance_runs_requested_version(containerd: PrivateContainerd) -> None:
    out = containerd.ctr("version").stdout
    server = out.split("Server:", 1)[1]
    assert f"Version:  {available_versions()[containerd.version]}" in server
    assert containerd.address.is_socket() and containerd.ttrpc_address.is_socket()


def test_run_rm_prints_output(
    containerd: PrivateContainerd, demo_image: str, no_leaks: None
) -> None:
    cid = unique_id("hello")
    res = containerd.ctr(
        "run", "--rm", demo_image, cid, "sh", "-c", "echo hello from $(uname -s); id -u",
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["hello from Linux", "0"]
    assert cid not in containerd.lines("containers", "ls", "-q")


def test_exit_code_propagates(
    containerd: PrivateContainerd, demo_image: str, no_leaks: None
) -> None:
    res = containerd.ctr("run", "--rm", demo_image, unique_id("exit7"), "sh", "-c", "exit 7",
                         check=False)
    assert res.returncode == 7, res.stderr


def test_detached_task_lifecycle(
    containerd: PrivateContainerd, demo_image: str, no_leaks: None
) -> None:
    cid = unique_id("detached")
    containerd.ctr("run", "-d", demo_image, cid, "sleep", "600")
    try:
        row = wait_for_status(containerd, cid, "RUNNING")
        assert procs.pid_alive(row.pid)
        containerd.ctr("tasks", "kill", "-s", "KILL", cid)
        wait_for_status(containerd, cid, "STOPPED")
        containerd.ctr("tasks", "rm", cid)
        assert cid not in list_tasks(containerd)
        assert not procs.pid_alive(row.pid)
        containerd.ctr("containers", "rm", cid)
        assert cid not in containerd.lines("containers", "ls", "-q")
    finally:
        containerd.ctr("tasks", "rm", "-f", cid, check=False)
        containerd.ctr("containers", "rm", cid, check=False)


@pytest.mark.parametrize("version", list(INSTALLS))
def test_stop_leaves_nothing_behind(version: str, demo_image_tar: Path) -> None:
    """stop() must remove tasks, shims, mounts and dirs even with a task still running."""
    if version not in available_versions():
        pytest.skip(f"containerd {version} is not installed")
    instance = PrivateContainerd(name=unique_id(f"stoptest{version}"), version=version)
    baseline = LeakBaseline.capture()
    with instance:
        instance.import_image(demo_image_tar)
        instance.ctr("run", "-d", DEMO_IMAGE, unique_id("left"), "sleep", "600")
        assert instance.shim_processes()
    assert not instance.root_dir.exists() and not instance.run_dir.exists()
    assert not mount_points_under(instance.root_dir, instance.run_dir)
    assert_no_leaks(instance, baseline)
    assert "containerd successfully booted" in instance.log_text()


def test_demo_with_runc(capsys: pytest.CaptureFixture[str], demo_image_tar: Path) -> None:
    """The demo runs end to end with runc standing in for the Bulkhead runtime."""
    if "1.6" not in available_versions():
        pytest.skip("containerd 1.6 is not installed")
    rc = run_demo(False, runtime="io.containerd.runc.v2", image_tar=demo_image_tar)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "hello from the guest: kernel" in out
    assert "no 'boot phases' line" in out


def test_config_is_valid_toml_with_cri(tmp_path: Path) -> None:
    cfg = ContainerdConfig(
        root=tmp_path / "root",
        state=tmp_path / "state",
        grpc_address=tmp_path / "c.sock",
        ttrpc_address=tmp_path / "c.sock.ttrpc",
        enable_cri=True,
    )
    doc = tomllib.loads(cfg.render())
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert doc["version"] == 2 and doc["disabled_plugins"] == []
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["runtimes"]["bulkhead"]["runtime_type"] == RUNTIME_TYPE
    assert cri["containerd"]["runtimes"]["bulkhead"]["privileged_without_host_devices"] is True
    assert (cri["netns_mounts_under_state_dir"], cri["stream_server_address"]) == (True,
                                                                                   "127.0.0.1")
    assert cri["sandbox_image"] == "localhost/bulkhead/pause:1"
    off = tomllib.loads(ContainerdConfig(**{**cfg.__dict__, "enable_cri": False}).render())
    assert off["disabled_plugins"] == ["io.containerd.grpc.v1.cri"]
    assert "io.containerd.grpc.v1.cri" not in off["plugins"]


def test_config_v3_for_containerd2(tmp_path: Path) -> None:
    """2.x gets a version 3 config: CRI split into images and runtime plugins, NRI off."""
    cfg = ContainerdConfig(
        root=tmp_path / "root",
        state=tmp_path / "state",
        grpc_address=tmp_path / "c.sock",
        ttrpc_address=tmp_path / "c.sock.ttrpc",
        containerd_version="2.1",
        enable_cri=True,
    )
    doc = tomllib.loads(cfg.render())
    plugins = doc["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    images = plugins["io.containerd.cri.v1.images"]
    assert doc["version"] == 3 and doc["disabled_plugins"] == []
    # Only the streaming server's keys stay with the gRPC CRI plugin in 2.x.
    assert plugins["io.containerd.grpc.v1.cri"] == {
        "stream_server_address": "127.0.0.1", "stream_server_port": "0"}
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["containerd"]["runtimes"]["bulkhead"]["runtime_type"] == RUNTIME_TYPE
    assert runtime["cni"]["bin_dirs"] == ["/usr/lib/cni"] and "bin_dir" not in runtime["cni"]
    assert images["snapshotter"] == "overlayfs" and images["pinned_images"]["sandbox"]
    assert plugins["io.containerd.nri.v1.nri"] == {"disable": True}
    off = tomllib.loads(ContainerdConfig(**{**cfg.__dict__, "enable_cri": False}).render())
    assert off["disabled_plugins"] == ["io.containerd.grpc.v1.cri"]
    assert "io.containerd.cri.v1.runtime" not in off["plugins"]


# The only error a CRI-enabled instance logs: we install no CNI network config.
CNI_NO_CONFIG = "failed to load cni during init"


@pytest.mark.parametrize("version", list(INSTALLS))
def test_cri_plugin_starts_cleanly(version: str) -> None:
    """With CRI enabled the plugin loads, the config uses no deprecated key (1.7+ report them),
    and containerd logs no error but the missing CNI config."""
    if version not in available_versions():
        pytest.skip(f"containerd {version} is not installed")
    instance = PrivateContainerd(name=unique_id(f"cri{version}"), version=version, enable_cri=True)
    with instance:
        plugin = instance.ctr("plugins", "ls", "id==cri").stdout.splitlines()[1:]
        assert [row.split()[-1] for row in plugin] == ["ok"], plugin
        if version != "1.6":  # 1.6's ctr has no `deprecations` command
            assert instance.ctr("deprecations", "list").stdout.strip() == ""
    errors = [line for line in instance.log_lines("level=error") if CNI_NO_CONFIG not in line]
    assert errors == []
