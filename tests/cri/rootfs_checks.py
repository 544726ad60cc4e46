"""CRI checks of what kubelet relies on around a container's files, for a runtime handler:
ConfigMap-style updates and hostPath edits seen at once, an emptyDir outliving the container
that wrote it, and the writable layer's size as CRI reports it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cri import runtime_v1_pb2 as pb
from cri.fixtures import CriEnv
from cri.pod_tools import SLEEP, exec_ok, running_pod, start

WRITE_BACK_TIMEOUT = 30.0  # a layered root's write-back runs every 10 s; containerd measures
MIB = 1 << 20


def configmap(volume: Path, version: str, value: str) -> None:
    """kubelet's atomic writer: files in a timestamped dir, `..data` swapped by rename."""
    data = volume / f"..{version}"
    data.mkdir()
    (data / "key").write_text(value)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, volume / "..data")
    if not (volume / "key").is_symlink():
        (volume / "key").symlink_to("..data/key")


def check_volume_coherence(env: CriEnv, handler: str, host_dir: Path) -> None:
    """A ConfigMap's `..data` swap and an in-place hostPath edit are visible in the container
    the moment they are made; an emptyDir keeps what one container wrote for the next."""
    cfg, edited, empty = host_dir / "cfg", host_dir / "hostpath", host_dir / "empty-dir"
    for d in (cfg, edited, empty):
        d.mkdir()
    configmap(cfg, "2026_12_07_1", "v1\n")
    (edited / "file").write_text("before\n")
    mounts = [pb.Mount(container_path="/cfg", host_path=str(cfg), readonly=True),
              pb.Mount(container_path="/edited", host_path=str(edited)),
              pb.Mount(container_path="/cache", host_path=str(empty))]
    with running_pod(env, handler, "coherent") as pod:
        first = start(env, pod, "first", SLEEP, mounts=mounts)
        assert exec_ok(env.client, first, "cat", "/cfg/key") == "v1\n"
        configmap(cfg, "2026_12_07_2", "v2\n")
        assert exec_ok(env.client, first, "cat", "/cfg/key") == "v2\n"
        (edited / "file").write_text("after\n")
        assert exec_ok(env.client, first, "cat", "/edited/file") == "after\n"
        exec_ok(env.client, first, "sh", "-c", "echo kept > /cache/note")
        assert (empty / "note").read_text() == "kept\n"  # at once on the host
        env.client.stop_container(first)
        env.client.remove_container(first)
        second = start(env, pod, "second", SLEEP, mounts=mounts)
        assert exec_ok(env.client, second, "cat", "/cache/note") == "kept\n"


def writable_layer_bytes(env: CriEnv, container_id: str) -> int:
    return int(env.client.container_stats(container_id).writable_layer.used_bytes.value)


def wait_writable_layer(env: CriEnv, container_id: str, ok: object) -> int:
    """The writable layer's size once ok(size) holds (asserted within WRITE_BACK_TIMEOUT)."""
    deadline = time.monotonic() + WRITE_BACK_TIMEOUT
    while True:
        size = writable_layer_bytes(env, container_id)
        if ok(size):  # type: ignore[operator]
            return size
        assert time.monotonic() < deadline, f"writable layer stayed at {size} bytes"
        time.sleep(1)


def check_writable_layer(env: CriEnv, handler: str) -> None:
    """ContainerStats.writable_layer follows what the container writes to its root (what
    kubelet's ephemeral-storage eviction reads). (Removal is the same write-back path, checked
    by test_writeback and test_rootfs_layers; containerd re-measures every 10 s.)"""
    with running_pod(env, handler, "wlayer") as pod:
        cid = start(env, pod, "writer", SLEEP)
        base = writable_layer_bytes(env, cid)
        exec_ok(env.client, cid, "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=6")
        wait_writable_layer(env, cid, lambda n: n >= base + 6 * MIB)
