"""What the CRI checks (tests/cri/*_checks.py) share: a pod for the length of a block, a
container of the demo image in it, waits, HTTP to a pod, ExecSync that must succeed, what is
left of a removed pod (shims, VMs, state dirs, mounts), and helpers for instance-level tests."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bulkhead.demo import procs
from bulkhead.sandbox.mounts import mount_points_under
from harness.containerd import CRI_NAMESPACE, PrivateContainerd
from leaks import BULKHEAD_RUN_DIR, is_qemu, sandbox_dirs

from cri import runtime_v1_pb2 as pb
from cri.client import CriClient, Pod, PodDefaults, unique
from cri.fixtures import CriEnv

HTTP_PORT = 8080
BODY = "hello from the pod"
SLEEP = ["sleep", "600"]
READY_TIMEOUT = 120.0  # a VM-backed pod under TCG


@contextlib.contextmanager
def running_pod(env: CriEnv, handler: str, config: pb.PodSandboxConfig | str) -> Iterator[Pod]:
    """A pod on handler for the duration of the block; stopped and removed after it."""
    pod = env.client.run_pod(config, handler)
    try:
        yield pod
    finally:
        env.client.stop_and_remove_pod(pod.id)


def start(env: CriEnv, pod: Pod, name: str, command: list[str], **fields: Any) -> str:
    """Create and start a container of the demo image in pod; returns its id."""
    config = env.client.container_config(name, env.image, command=command, **fields)
    return env.client.create_and_start(pod, config)


def httpd(body: str = BODY, port: int = HTTP_PORT) -> list[str]:
    """busybox httpd in the foreground serving body as /index.html."""
    return ["sh", "-c", f"mkdir -p /www && echo '{body}' > /www/index.html && "
            f"exec httpd -f -p {port} -h /www"]


def wait_until(what: str, probe: Callable[[], object], timeout: float = READY_TIMEOUT) -> None:
    """Retry probe until it returns truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception as exc:  # noqa: BLE001 - not ready yet, whatever the reason
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{what} not within {timeout} s (last: {last!r})")


def wait_httpd(client: CriClient, container_id: str, port: int = HTTP_PORT) -> None:
    """Until httpd answers inside the container (so later failures are the path's fault)."""
    def answered() -> bool:
        res = client.exec_sync(container_id, ["wget", "-qO-", f"http://127.0.0.1:{port}/"], 10)
        return BODY.encode() in res.stdout
    wait_until("httpd inside the pod", answered)


def http_get(url: str, timeout: float = 10.0) -> str:
    """GET without any proxy from the environment: the test talks to its own bridge only."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as res:
        return str(res.read().decode())


def pod_ip(client: CriClient, pod: Pod) -> str:
    return client.pod_sandbox_status(pod.id).status.network.ip


def free_port() -> int:
    """A TCP port nothing on this host listens on now (for a hostPort)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exec_ok(client: CriClient, container_id: str, *cmd: str) -> str:
    """ExecSync that must exit 0; returns stdout."""
    res = client.exec_sync(container_id, list(cmd), timeout=60)
    assert res.exit_code == 0, (cmd, res)
    return res.stdout.decode()


# --- for instance-level tests ------------------------------------------------------------------

unique_name = unique


def leave_running_pod(instance: PrivateContainerd, log_root: Path) -> None:
    """Run a pod with a hostPort and a running container on instance, and leave it running."""
    with CriClient(instance.address, PodDefaults(cgroup_parent=instance.cgroup_parent,
                                                 log_root=log_root)) as client:
        client.wait_ready()
        assert instance.network is not None
        mapping = pb.PortMapping(container_port=HTTP_PORT, host_port=free_port(),
                                 host_ip=str(instance.network.gateway))
        pod = client.run_pod(client.pod_config("left", ports=[mapping]), "runc")
        config = client.container_config("web", "docker.io/bulkhead/demo:latest",
                                         command=httpd())
        client.create_and_start(pod, config)


def pod_shims(env: CriEnv, pod_id: str) -> list[procs.Proc]:
    """The long-running shim(s) of this instance serving pod_id (runc's shim groups a pod's
    containers too); not the short `start`/`delete` invocations."""
    address = str(env.instance.address)
    return [p for p in procs.processes()
            if procs.has_arg_pair(p, "-address", address) and procs.has_arg_pair(p, "-id", pod_id)
            and not {"start", "delete"} & set(p.argv)]


def pod_vms(pod_id: str) -> list[procs.Proc]:
    """QEMU processes whose state lives in this pod's sandbox dir."""
    return [p for p in procs.processes() if is_qemu(p) and f"/{pod_id}/" in p.command]


def pod_state_dirs(pod_id: str) -> list[str]:
    """Bulkhead state dirs /run/bulkhead/<namespace>/<pod_id>."""
    return sorted(d for d in sandbox_dirs() if d.endswith("/" + pod_id))


def pod_shim_socket(env: CriEnv, pod_id: str) -> Path:
    return env.instance.shim_socket(CRI_NAMESPACE, pod_id)


def pod_leftovers(env: CriEnv, pod_id: str) -> list[str]:
    """What of a removed pod still exists: CRI entries, shims and their socket, VMs, state
    dirs, its mounts."""
    socket_path = pod_shim_socket(env, pod_id)
    left = [f"shim socket {socket_path}"] if socket_path.exists() else []
    left += [f"pod {p.id[:12]}" for p in env.client.list_pod_sandbox() if p.id == pod_id]
    left += [f"container {c.id[:12]}" for c in env.client.list_containers()
             if c.pod_sandbox_id == pod_id]
    left += [f"shim {p.pid}: {p.command[:120]}" for p in pod_shims(env, pod_id)]
    left += [f"qemu {p.pid}" for p in pod_vms(pod_id)]
    left += [f"state dir {d}" for d in pod_state_dirs(pod_id)]
    left += [f"mount {m.mount_point}" for m in mount_points_under(BULKHEAD_RUN_DIR)
             if f"/{pod_id}" in m.mount_point]
    return left
