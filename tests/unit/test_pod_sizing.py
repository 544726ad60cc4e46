"""A pod's VM size from its sandbox annotations, and its containers' namespaces in the guest."""

from __future__ import annotations

import pytest
from bulkhead.config import Config
from bulkhead.sandbox import sizing
from bulkhead.sandbox.guest_spec import for_guest
from bulkhead.sandbox.volumes import share
from bulkhead_wire.guest_abi import GUEST_POD_SHM_DIR as POD_SHM


def test_pod_resources_size_the_vm() -> None:
    cfg = Config(memory_mib=512, vcpus=1, pod_overhead_mib=96, max_vcpus=4)
    sized = sizing.for_pod(cfg, {sizing.MEMORY: str(256 << 20), sizing.CPU_QUOTA: "150000",
                                 sizing.CPU_PERIOD: "100000"})
    assert (sized.memory_mib, sized.vcpus) == (256 + 96, 2)
    assert sizing.for_pod(cfg, {}) == cfg  # no pod resources: the config's size
    many = sizing.for_pod(cfg, {sizing.CPU_QUOTA: "900000", sizing.CPU_PERIOD: "100000"})
    assert many.vcpus == 4


@pytest.mark.parametrize("annotations,why", [
    ({sizing.MEMORY: str(8 << 20)}, "pod memory limit 8 MiB is below the minimum of 32 MiB"),
    ({sizing.MEMORY: "lots"}, "io.kubernetes.cri.sandbox-memory='lots' is not an integer"),
])
def test_pods_that_cannot_make_a_vm_are_refused(annotations: dict[str, str], why: str) -> None:
    with pytest.raises(sizing.SizingError, match=why):
        sizing.for_pod(Config(pod_overhead_mib=96), annotations)


def spec(namespaces: list[dict[str, str]]) -> dict[str, object]:
    return {"process": {"args": ["sh"]}, "linux": {"namespaces": namespaces}}


def test_pod_containers_share_the_vm_network_and_the_sandbox_pid_namespace() -> None:
    joined = spec([{"type": "pid", "path": "/proc/4242/ns/pid"},
                   {"type": "network", "path": "/proc/4242/ns/net"},
                   {"type": "ipc", "path": "/proc/4242/ns/ipc"},
                   {"type": "uts", "path": "/proc/4242/ns/uts"}, {"type": "mount"}])
    out = for_guest(joined, "c1", sandbox_pid=17)
    assert out["linux"]["namespaces"] == [{"type": "pid", "path": "/proc/17/ns/pid"},
                                          {"type": "mount"}, {"type": "cgroup"}]
    lone = for_guest(spec([{"type": "network"}, {"type": "pid"}]), "c2")
    assert lone["linux"]["namespaces"] == [{"type": "network"}, {"type": "pid"},
                                           {"type": "cgroup"}]


def test_dev_shm_is_the_pods_tmpfs_in_the_guest(tmp_path: object) -> None:
    mounts = [{"destination": "/dev/shm", "type": "bind", "source": "/run/x/shm",
               "options": ["rbind", "rw"]}]
    assert share(mounts, -1, "/g") == [
        {"destination": "/dev/shm", "type": "bind", "source": POD_SHM, "options": ["rbind", "rw"]}]
