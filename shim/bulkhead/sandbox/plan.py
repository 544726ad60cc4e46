"""A sandbox's boot inputs as one frozen value, made by a pure function from its first
container's spec and the runtime config: what the VM is, before anything of it exists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bulkhead.config import Config
from bulkhead.sandbox import host_cgroup, sizing
from bulkhead.sandbox.guest_spec import (
    SpecError,
    network_namespace_path,
    vm_wide_sysctls,
    wants_new_network_namespace,
)


class PlanError(ValueError):
    """The first container's spec asks for a VM that cannot be made; names what is wrong."""


@dataclass(frozen=True)
class SandboxPlan:
    """What a sandbox's VM boots with; fixed once its first container is created."""

    config: Config  # the runtime config, sized for the pod
    hostname: str  # the VM's own; a pod's from its sandbox spec
    netns_path: str = ""  # the pod's network namespace (CRI); "" for a lone container
    own_netns: bool = False  # a lone container asking for a new one: QEMU's own, at Start
    vm_sysctls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cgroups_path: str = ""  # the pod sandbox's host cgroup (CRI), where QEMU runs


def plan_sandbox(sandbox_id: str, config: Config, task_id: str, spec: dict[str, Any],
                 annotations: dict[str, str], pod_sandbox: bool) -> SandboxPlan:
    """The plan of the VM that a sandbox's first container (task_id) brings up.

    pod_sandbox: task_id is a CRI pod's sandbox container, which also gives the VM its size
    (from its annotations), host cgroup and VM-wide sysctls.
    """
    cgroups_path = ""
    sysctls: dict[str, str] = {}
    if pod_sandbox:
        try:
            config = sizing.for_pod(config, annotations)
            cgroups_path = str(spec.get("linux", {}).get("cgroupsPath") or "")
            if cgroups_path:
                host_cgroup.relative_path(cgroups_path)  # refused now, before the VM boots
            sysctls = vm_wide_sysctls(spec)
        except (SpecError, sizing.SizingError, host_cgroup.HostCgroupError) as exc:
            raise PlanError(f"pod sandbox {task_id}: {exc}") from None
    hostname = spec.get("hostname")
    netns_path = network_namespace_path(spec)
    return SandboxPlan(
        config=config,
        hostname=hostname if isinstance(hostname, str) and hostname else sandbox_id[:63],
        netns_path=netns_path,
        own_netns=not netns_path and wants_new_network_namespace(spec),
        vm_sysctls=MappingProxyType(sysctls), cgroups_path=cgroups_path)

