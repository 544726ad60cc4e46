"""Leak checks for CRI tests: on top of the task-level ones (processes: QEMU and shims; shim
sockets; mounts under the instance's dirs and /run/bulkhead; Bulkhead sandbox state dirs in
/run/bulkhead/<namespace>/; taps in the host netns), every pod and container must be gone
through CRI, with its netns mount, its veth on the test bridge, its lease, libcni cache file and
portmap rules."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bulkhead.demo import procs
from harness import cni
from harness.containerd import CRI_NAMESPACE, PrivateContainerd
from leaks import LeakBaseline, find_leaks

from cri.client import CriClient, CriError

HOST_NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
# containerd's netns names; others there belong to other users of `ip netns` on the host.
CRI_NETNS_PREFIX = "cni-"
HOST_LOCAL_BOOKKEEPING = {"lock", "last_reserved_ip.0"}  # host-local's files that are not leases


def _listdir(path: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(path))
    except OSError:
        return frozenset()


@dataclass(frozen=True)
class CriBaseline:
    """What existed before a test besides the task-level baseline: host-wide netns entries."""

    tasks: LeakBaseline = field(default_factory=LeakBaseline)
    host_netns: frozenset[str] = frozenset()

    @classmethod
    def capture(cls) -> CriBaseline:
        entries = frozenset(str(d / n) for d in HOST_NETNS_DIRS for n in _listdir(d))
        return cls(LeakBaseline.capture(), entries)


def pods_left(client: CriClient) -> list[str]:
    """Pod sandboxes and containers CRI still knows."""
    left = [f"pod {p.id[:12]} ({p.metadata.name}) still exists" for p in client.list_pod_sandbox()]
    left += [f"container {c.id[:12]} ({c.metadata.name}) still exists"
             for c in client.list_containers()]
    return left


def network_leaks(instance: PrivateContainerd) -> list[str]:
    """What CNI DEL should have removed: veths, leases, cache files, portmap rules."""
    net = instance.network
    if net is None:
        return []
    leaks = [f"veth {port} on {net.bridge}" for port in cni.bridge_ports(net.bridge)]
    leases = _listdir(instance.cni_ipam_dir / net.name) - HOST_LOCAL_BOOKKEEPING
    leaks += [f"host-local lease {name}" for name in sorted(leases)]
    leaks += [f"libcni cache {path}" for path in cni.cache_files(net)]
    leaks += [f"iptables rule {rule}" for rule in cni.rules_of(net)]
    return leaks


def find_cri_leaks(instance: PrivateContainerd, client: CriClient,
                   baseline: CriBaseline) -> list[str]:
    """Every leak found now; an empty list means clean."""
    leaks = pods_left(client) + find_leaks(instance, baseline.tasks)
    leaks += [f"task {CRI_NAMESPACE}/{t} still exists"
              for t in instance.lines("tasks", "ls", "-q", namespace=CRI_NAMESPACE)]
    leaks += [f"netns {instance.netns_dir / n}" for n in sorted(_listdir(instance.netns_dir))]
    leaks += [f"netns {d / n}" for d in HOST_NETNS_DIRS for n in sorted(_listdir(d))
              if n.startswith(CRI_NETNS_PREFIX) and str(d / n) not in baseline.host_netns]
    return leaks + network_leaks(instance)


def assert_no_cri_leaks(instance: PrivateContainerd, client: CriClient, baseline: CriBaseline,
                        timeout: float = 15.0) -> None:
    """Fail unless everything is gone within timeout (shims and VMs exit asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        leaks = find_cri_leaks(instance, client, baseline)
        if not leaks or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    assert not leaks, "leaked after the test:\n  " + "\n  ".join(leaks)


def remove_leftovers(instance: PrivateContainerd, client: CriClient) -> list[str]:
    """Stop and remove what a failed test left, so the next test starts clean (and no VM of
    it keeps running): a pod CRI cannot stop has its shim killed, then is removed again."""
    errors = []
    for pod in client.list_pod_sandbox():
        try:
            client.stop_and_remove_pod(pod.id)
            continue
        except CriError as exc:
            errors.append(f"{pod.id[:12]}: {exc}")
        kill_shims(instance, pod.id)
        try:
            client.stop_and_remove_pod(pod.id)
        except CriError as exc:
            errors.append(f"{pod.id[:12]} after killing its shim: {exc}")
    return errors


def kill_shims(instance: PrivateContainerd, pod_id: str) -> list[int]:
    """SIGKILL this instance's shim(s) serving pod_id; containerd then cleans up after them."""
    address = str(instance.address)
    shims = procs.find_processes(lambda p: procs.has_arg_pair(p, "-address", address)
                                 and procs.has_arg_pair(p, "-id", pod_id))
    procs.kill_and_wait(p.pid for p in shims)
    return [p.pid for p in shims]
