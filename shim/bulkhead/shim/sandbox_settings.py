"""What a sandbox's VM takes from its first container before it boots: a config file from the
runtime options, and from the spec its size, host cgroup, sysctls, hostname and network."""

from __future__ import annotations

import os
from typing import Any

from bulkhead_wire.proto import runtimeoptions_pb2, task_pb2
from bulkhead_wire.ttrpc import Code, TtrpcError

from bulkhead import config as config_mod
from bulkhead.sandbox import host_cgroup, sizing
from bulkhead.sandbox.guest_spec import (
    SpecError,
    network_namespace_path,
    vm_wide_sysctls,
    wants_new_network_namespace,
)
from bulkhead.sandbox.sandbox import Sandbox
from bulkhead.shim.grouping import CONTAINER_TYPE, annotations_of


def take_from_spec(sb: Sandbox, task_id: str, spec: dict[str, Any]) -> None:
    """What the VM takes from its first container's spec: for a pod sandbox its size,
    host cgroup and VM-wide sysctls; for any, the hostname and network namespace."""
    try:
        annotations = annotations_of(spec)
        if annotations.get(CONTAINER_TYPE) == "sandbox":
            sb.config = sizing.for_pod(sb.config, annotations)
            sb.cgroups_path = str(spec.get("linux", {}).get("cgroupsPath") or "")
            if sb.cgroups_path:
                host_cgroup.relative_path(sb.cgroups_path)  # refused now, before the VM boots
            sb.vm_sysctls = vm_wide_sysctls(spec)
    except (SpecError, sizing.SizingError, host_cgroup.HostCgroupError) as exc:
        raise TtrpcError(Code.INVALID_ARGUMENT, f"pod sandbox {task_id}: {exc}") from None
    hostname = spec.get("hostname")
    if isinstance(hostname, str) and hostname:
        sb.hostname = hostname
    sb.netns_path = network_namespace_path(spec)
    sb.own_netns = not sb.netns_path and wants_new_network_namespace(spec)


def apply_runtime_options(sb: Sandbox, req: task_pb2.CreateTaskRequest) -> bool:
    """`--runtime-config-path` / CRI ConfigPath: a config file for this sandbox's VM.

    Returns True if the request carried a config file (which then replaces the default).
    """
    if not req.options.type_url.endswith("runtimeoptions.v1.Options"):
        return False
    opts = runtimeoptions_pb2.Options.FromString(req.options.value)
    if not opts.config_path or sb.agent is not None:
        return False
    if not os.path.isfile(opts.config_path):
        raise TtrpcError(Code.INVALID_ARGUMENT,
                         f"runtime config {opts.config_path}: no such file")
    try:
        sb.config = config_mod.load(opts.config_path)
    except config_mod.ConfigError as exc:
        raise TtrpcError(Code.INVALID_ARGUMENT, f"runtime config {exc}") from None
    return True
