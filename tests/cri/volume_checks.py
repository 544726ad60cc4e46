"""CRI checks of what a pod's containers mount, for a runtime handler: host directories read-only
and read-write, one volume shared by two containers, the pod's shared /dev/shm."""

from __future__ import annotations

from pathlib import Path

from cri import logs
from cri import runtime_v1_pb2 as pb
from cri.client import CriClient
from cri.fixtures import CriEnv
from cri.pod_tools import (
    READY_TIMEOUT,
    SLEEP,
    exec_ok,
    running_pod,
    start,
)


def check_mounts(env: CriEnv, handler: str, host_dir: Path) -> None:
    """Host directories mounted read-only and read-write: contents visible both ways, writes
    refused on the read-only one."""
    ro, rw = host_dir / "ro", host_dir / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "file").write_text("from the host\n")
    mounts = [pb.Mount(container_path="/ro", host_path=str(ro), readonly=True),
              pb.Mount(container_path="/rw", host_path=str(rw))]
    script = ("cat /ro/file; echo from-container > /rw/out; "
              "touch /ro/x 2>/dev/null && echo ro-writable || echo ro-refused")
    with running_pod(env, handler, "mounts") as pod:
        cid = start(env, pod, "mounter", ["sh", "-c", script], mounts=mounts)
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        out = logs.lines(logs.read(status.log_path), "stdout")
    assert out == [b"from the host", b"ro-refused"], out
    assert (rw / "out").read_text() == "from-container\n"
    assert not (ro / "x").exists()


def check_shared_volume(env: CriEnv, handler: str, host_dir: Path) -> None:
    """One host directory mounted into two containers of a pod: each sees what the other
    wrote (also after an overwrite), and the host sees both."""
    volume = host_dir / "shared"
    volume.mkdir()
    mount = [pb.Mount(container_path="/data", host_path=str(volume))]
    with running_pod(env, handler, "sharedvol") as pod:
        writer = start(env, pod, "writer", SLEEP, mounts=mount)
        reader = start(env, pod, "reader", SLEEP, mounts=mount)
        exec_ok(env.client, writer, "sh", "-c", "echo first > /data/note")
        assert exec_ok(env.client, reader, "cat", "/data/note") == "first\n"
        exec_ok(env.client, writer, "sh", "-c", "echo second >> /data/note")
        assert exec_ok(env.client, reader, "cat", "/data/note") == "first\nsecond\n"
        exec_ok(env.client, reader, "sh", "-c", "echo reply > /data/reply")
        assert exec_ok(env.client, writer, "cat", "/data/reply") == "reply\n"
        (volume / "from-host").write_text("host\n")
        for cid in (writer, reader):
            assert exec_ok(env.client, cid, "cat", "/data/from-host") == "host\n"
    assert (volume / "note").read_text() == "first\nsecond\n"
    assert (volume / "reply").read_text() == "reply\n"


SHM_KIB = 64 * 1024  # containerd's sandbox /dev/shm: a 64 MiB tmpfs shared by the pod (IPC=POD)


def shm_kib(client: CriClient, container_id: str) -> int:
    """The size of /dev/shm as `df -k` sees it in the container."""
    out = exec_ok(client, container_id, "df", "-k", "/dev/shm").splitlines()
    return int(out[-1].split()[1])


def check_shm(env: CriEnv, handler: str) -> None:
    """/dev/shm is one tmpfs for the pod: a file written there in one container is read in
    another; its size is containerd's 64 MiB; it is not the rootfs."""
    with running_pod(env, handler, "shm") as pod:
        first = start(env, pod, "first", SLEEP)
        second = start(env, pod, "second", SLEEP)
        exec_ok(env.client, first, "sh", "-c", "echo shared-memory > /dev/shm/probe")
        assert exec_ok(env.client, second, "cat", "/dev/shm/probe") == "shared-memory\n"
        exec_ok(env.client, second, "rm", "/dev/shm/probe")
        assert "gone" in exec_ok(env.client, first, "sh", "-c",
                                 "test -e /dev/shm/probe && echo there || echo gone")
        for cid in (first, second):
            assert shm_kib(env.client, cid) == SHM_KIB
            shm = [line.split() for line in exec_ok(env.client, cid, "cat", "/proc/mounts")
                   .splitlines() if line.split()[1:2] == ["/dev/shm"]]
            assert shm and shm[-1][2] == "tmpfs", shm
