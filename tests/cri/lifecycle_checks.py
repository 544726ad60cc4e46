"""CRI checks of a pod's and its containers' life for a runtime handler: Version and Status,
exit codes and reasons, StartError, stop and removal of a pod, three containers in one pod,
annotations in the spec. Each check runs its own pods on the handler and removes them again."""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.containerd import CRI_NAMESPACE
from leaks import sandbox_dirs

from cri import runtime_v1_pb2 as pb
from cri.client import CriClient, CriError, Pod
from cri.fixtures import CriEnv
from cri.pod_tools import (
    READY_TIMEOUT,
    SLEEP,
    exec_ok,
    pod_leftovers,
    pod_shims,
    pod_state_dirs,
    pod_vms,
    running_pod,
    start,
    wait_until,
)


def check_runtime(env: CriEnv) -> None:
    """Version and Status answer; both images are in CRI's store, the pause one pinned (1.7+)."""
    version = env.client.version()
    assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
    assert version.runtime_version.startswith(env.version + ".")
    conditions = {c.type: c for c in env.client.status().status.conditions}
    assert conditions["RuntimeReady"].status and conditions["NetworkReady"].status, conditions
    # 1.7.24+ and 2.x add ContainerdHasNoDeprecationWarnings: our configs use no deprecated key.
    assert all(c.status for c in conditions.values()), conditions
    images = {tag: image for image in env.client.list_images() for tag in image.repo_tags}
    assert {env.image, env.pause_image} <= set(images)
    assert images[env.pause_image].pinned == (env.version != "1.6")
    assert images[env.image].id.startswith("sha256:")
    status = env.client.image_status(env.image)
    assert status is not None and status.id == images[env.image].id
    assert env.client.image_status("localhost/bulkhead/absent:1") is None


def check_exit_codes(env: CriEnv, handler: str) -> None:
    """ContainerStatus reports exit codes and reasons: Completed, Error, a SIGKILL after the
    stop timeout (137), a TERM handler's clean exit, and StartError for a missing binary."""
    client = env.client
    with running_pod(env, handler, "exits") as pod:
        failing = start(env, pod, "fails", ["sh", "-c", "exit 3"])
        ignoring = start(env, pod, "ignores-term", SLEEP)
        trapping = start(env, pod, "traps-term",
                         ["sh", "-c", 'trap "exit 0" TERM; while :; do sleep 0.1; done'])
        status = client.wait_container(failing, timeout=READY_TIMEOUT)
        assert (status.exit_code, status.reason, status.state) == (3, "Error", pb.CONTAINER_EXITED)
        # started_at is containerd's clock after task Start returned, finished_at the shim's
        # exit time: a container that exits at once may "finish" before it "started".
        assert status.started_at > 0 and status.finished_at > status.started_at - 10**9
        client.stop_container(ignoring, timeout=1)  # PID 1 ignores SIGTERM: killed after 1 s
        assert _exit(client, ignoring) == (137, "Error")
        client.stop_container(trapping, timeout=30)
        assert _exit(client, trapping) == (0, "Completed")
        check_start_error(env, pod)


def _exit(client: CriClient, container_id: str) -> tuple[int, str]:
    status = client.container_status(container_id).status
    assert status.state == pb.CONTAINER_EXITED, status
    return status.exit_code, status.reason


def check_start_error(env: CriEnv, pod: Pod) -> None:
    """StartContainer of a missing binary fails; the container is EXITED with StartError."""
    config = env.client.container_config("missing", env.image, command=["/no/such/binary"])
    cid = env.client.create_container(pod.id, config, pod.config)
    try:
        env.client.start_container(cid)
    except CriError as exc:
        assert "no/such/binary" in exc.details, exc
    else:
        raise AssertionError("StartContainer of a missing binary succeeded")
    status = env.client.container_status(cid).status
    assert (status.state, status.reason, status.exit_code) == (pb.CONTAINER_EXITED,
                                                               "StartError", 128), status


def check_stop_and_remove(env: CriEnv, handler: str) -> None:
    """StopPodSandbox kills containers, runs CNI DEL and drops the netns; RemovePodSandbox
    forgets the pod; both are idempotent; the log file stays."""
    client = env.client
    pod = client.run_pod("stopme", handler)
    cid = start(env, pod, "sleeper", SLEEP)
    client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
    status = client.pod_sandbox_status(pod.id).status
    assert status.state == pb.SANDBOX_READY and status.network.ip
    assert any(env.instance.netns_dir.iterdir())
    client.stop_pod_sandbox(pod.id)
    status = client.pod_sandbox_status(pod.id).status
    assert status.state == pb.SANDBOX_NOTREADY
    assert client.container_status(cid).status.state == pb.CONTAINER_EXITED
    assert not any(env.instance.netns_dir.iterdir())
    client.stop_pod_sandbox(pod.id)
    log_path = Path(client.container_status(cid).status.log_path)
    client.remove_pod_sandbox(pod.id)
    client.remove_pod_sandbox(pod.id)
    assert [p.id for p in client.list_pod_sandbox()] == []
    assert client.list_containers() == []
    for call in (lambda: client.pod_sandbox_status(pod.id),
                 lambda: client.container_status(cid)):
        try:
            call()
        except CriError as exc:
            assert exc.code.name == "NOT_FOUND", exc
        else:
            raise AssertionError("a removed pod or container still has a status")
    assert log_path.is_file()


def check_three_containers(env: CriEnv, handler: str) -> None:
    """Three containers in one pod: one shim process for the pod (and for Bulkhead one QEMU);
    StopContainer and RemoveContainer of one leave the others running and exec-able; the pod
    then stops and goes promptly, its shim and VM with it."""
    client = env.client
    with running_pod(env, handler, "trio") as pod:
        ids = [start(env, pod, f"c{i}", SLEEP) for i in range(3)]
        for cid in ids:
            client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
        shims = pod_shims(env, pod.id)
        assert len(shims) == 1, [p.command for p in shims]
        if handler == "bulkhead":
            assert "bulkhead.shim.daemon" in shims[0].argv, shims[0].command
            assert len(pod_vms(pod.id)) == 1, [p.command for p in pod_vms(pod.id)]
            # where the leak checks look for its state
            assert pod_state_dirs(pod.id) == [f"{CRI_NAMESPACE}/{pod.id}"], sandbox_dirs()
        victim, survivors = ids[0], ids[1:]
        client.stop_container(victim, timeout=0)
        assert _exit(client, victim) == (137, "Error")
        for cid in survivors:
            assert client.container_status(cid).status.state == pb.CONTAINER_RUNNING
            assert exec_ok(client, cid, "echo", "alive") == "alive\n"
        client.remove_container(victim)
        listed = client.list_containers(pb.ContainerFilter(pod_sandbox_id=pod.id))
        assert sorted(c.id for c in listed) == sorted(survivors)
        for cid in survivors:
            assert exec_ok(client, cid, "cat", "/proc/1/cmdline") == "sleep\x00600\x00"
        assert [p.pid for p in pod_shims(env, pod.id)] == [shims[0].pid]
        if handler == "bulkhead":
            assert len(pod_vms(pod.id)) == 1
        began = time.monotonic()
    took = time.monotonic() - began
    assert took < 20, f"stopping and removing the pod took {took:.1f} s"
    wait_until("the pod's shim and VM to exit", lambda: not pod_leftovers(env, pod.id), 15)


def check_annotations(env: CriEnv, handler: str) -> None:
    """Pod and container annotations matching the handler's globs reach the OCI spec."""
    config = env.client.pod_config("annotated", annotations={"bulkhead.dev/pod": "p",
                                                              "other.dev/pod": "x"})
    with running_pod(env, handler, config) as pod:
        cid = start(env, pod, "sleeper", SLEEP, annotations={"bulkhead.dev/ctr": "c"})
        info = json.loads(env.client.container_status(cid, verbose=True).info["info"])
    annotations = info["runtimeSpec"]["annotations"]
    assert annotations["bulkhead.dev/pod"] == "p" and annotations["bulkhead.dev/ctr"] == "c"
    assert "other.dev/pod" not in annotations
    assert annotations["io.kubernetes.cri.sandbox-id"] == pod.id
