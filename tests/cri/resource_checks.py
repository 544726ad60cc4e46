"""CRI checks of a pod's resources and security for a runtime handler: stats, resource updates,
the security context, and a pod too small for a VM refused."""

from __future__ import annotations

import json
import re

from cri import logs
from cri import runtime_v1_pb2 as pb
from cri.client import CriError
from cri.fixtures import CriEnv
from cri.pod_tools import (
    HTTP_PORT,
    READY_TIMEOUT,
    SLEEP,
    exec_ok,
    http_get,
    httpd,
    pod_ip,
    running_pod,
    start,
    wait_httpd,
)


def check_stats(env: CriEnv, handler: str) -> None:
    """ContainerStats, ListContainerStats and PodSandboxStats report non-zero CPU and memory,
    eth0 traffic and a process count."""
    client = env.client
    with running_pod(env, handler, "stats") as pod:
        cid = start(env, pod, "web", httpd())
        wait_httpd(client, cid)
        http_get(f"http://{pod_ip(client, pod)}:{HTTP_PORT}/")
        stats = client.container_stats(cid)
        assert stats.attributes.id == cid and stats.attributes.metadata.name == "web"
        assert stats.cpu.usage_core_nano_seconds.value > 0, stats
        assert stats.memory.working_set_bytes.value > 0, stats
        listed = client.list_container_stats(pb.ContainerStatsFilter(pod_sandbox_id=pod.id))
        assert [s.attributes.id for s in listed] == [cid]
        linux = client.pod_sandbox_stats(pod.id).linux
        assert linux.cpu.usage_core_nano_seconds.value > 0, linux
        assert linux.memory.working_set_bytes.value > 0, linux
        assert linux.network.default_interface.name == "eth0", linux.network
        assert linux.network.default_interface.rx_bytes.value > 0, linux.network
        assert linux.process.process_count.value >= 1, linux.process
        assert cid in [c.attributes.id for c in linux.containers]


def check_update_resources(env: CriEnv, handler: str) -> None:
    """UpdateContainerResources on a running container: CRI reports the new limits and the
    container's memory cgroup enforces the new limit."""
    mib64 = 64 << 20
    with running_pod(env, handler, "update") as pod:
        cid = start(env, pod, "sleeper", SLEEP)
        env.client.wait_container(cid, pb.CONTAINER_RUNNING, timeout=READY_TIMEOUT)
        env.client.update_container_resources(cid, pb.LinuxContainerResources(
            memory_limit_in_bytes=mib64, cpu_period=100000, cpu_quota=50000))
        resources = env.client.container_status(cid).status.resources.linux
        assert (resources.memory_limit_in_bytes, resources.cpu_quota) == (mib64, 50000)
        # cgroup v2 in a Bulkhead guest, v1 for runc on this hybrid host
        limit = exec_ok(env.client, cid, "sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null"
                        " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert int(limit) == mib64


def check_security_context(env: CriEnv, handler: str) -> None:
    """run_as_user/group, readonly_rootfs, dropped and added capabilities and no_new_privs
    reach the container's process."""
    security = pb.LinuxContainerSecurityContext(
        run_as_user=pb.Int64Value(value=65534), run_as_group=pb.Int64Value(value=65534),
        readonly_rootfs=True, no_new_privs=True,
        capabilities=pb.Capability(drop_capabilities=["ALL"],
                                   add_capabilities=["NET_BIND_SERVICE"]))
    script = ('id -u; id -g; grep -E "^(CapBnd|CapEff|NoNewPrivs):" /proc/self/status; '
              "touch /probe 2>/dev/null && echo rootfs-writable || echo rootfs-readonly")
    with running_pod(env, handler, "security") as pod:
        cid = start(env, pod, "restricted", ["sh", "-c", script],
                    linux=pb.LinuxContainerConfig(security_context=security))
        status = env.client.wait_container(cid, timeout=READY_TIMEOUT)
        out = logs.lines(logs.read(status.log_path), "stdout")
    assert status.exit_code == 0, status
    fields = [re.sub(rb"\s+", b" ", line) for line in out]
    # Only NET_BIND_SERVICE (bit 10) stays bounded; a non-root user has none effective.
    assert fields == [b"65534", b"65534", b"CapEff: 0000000000000000",
                      b"CapBnd: 0000000000000400", b"NoNewPrivs: 1", b"rootfs-readonly"], out


# --- refused pods ------------------------------------------------------------------------------

SANDBOX_MEMORY = "io.kubernetes.cri.sandbox-memory"
TOO_LITTLE_MEMORY = 16 << 20


def check_small_memory_pod(env: CriEnv, handler: str) -> None:
    """A pod limited to 16 MiB (containerd passes the pod's memory limit to the runtime as the
    io.kubernetes.cri.sandbox-memory annotation): runc runs it (the pause process fits), a
    Bulkhead VM cannot, so RunPodSandbox fails naming the 32 MiB minimum and leaves nothing."""
    resources = pb.LinuxContainerResources(memory_limit_in_bytes=TOO_LITTLE_MEMORY)
    config = env.client.pod_config("tiny", linux=pb.LinuxPodSandboxConfig(resources=resources))
    if handler != "bulkhead":
        with running_pod(env, handler, config) as pod:
            info = json.loads(env.client.pod_sandbox_status(pod.id, verbose=True).info["info"])
            annotations = info["runtimeSpec"]["annotations"]
            assert annotations.get(SANDBOX_MEMORY) == str(TOO_LITTLE_MEMORY), annotations
        return
    try:
        pod_id = env.client.run_pod_sandbox(config, handler)
    except CriError as exc:
        assert "32 MiB" in exc.details, exc
    else:
        env.client.stop_and_remove_pod(pod_id)
        raise AssertionError("a Bulkhead pod of 16 MiB was run")
    assert env.client.list_pod_sandbox() == [], env.client.list_pod_sandbox()
    assert env.client.list_containers() == []
