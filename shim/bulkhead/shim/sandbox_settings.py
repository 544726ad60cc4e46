"""The runtime config a sandbox's VM is planned from: the shim's own, or a config file that
the first container's runtime options name (`ctr --runtime-config-path`, the CRI's
ConfigPath); then its SandboxPlan (sandbox/plan.py), as TtrpcErrors containerd reports."""

from __future__ import annotations

import os
from typing import Any

from bulkhead_wire.proto import runtimeoptions_pb2, task_pb2
from bulkhead_wire.ttrpc import Code, TtrpcError

from bulkhead import config as config_mod
from bulkhead.sandbox.plan import PlanError, SandboxPlan, plan_sandbox
from bulkhead.shim.grouping import CONTAINER_TYPE


def runtime_config(req: task_pb2.CreateTaskRequest) -> config_mod.Config | None:
    """The config file the request's runtime options name, loaded; None if there is none."""
    if not req.options.type_url.endswith("runtimeoptions.v1.Options"):
        return None
    opts = runtimeoptions_pb2.Options.FromString(req.options.value)
    if not opts.config_path:
        return None
    if not os.path.isfile(opts.config_path):
        raise TtrpcError(Code.INVALID_ARGUMENT,
                         f"runtime config {opts.config_path}: no such file")
    try:
        return config_mod.load(opts.config_path)
    except config_mod.ConfigError as exc:
        raise TtrpcError(Code.INVALID_ARGUMENT, f"runtime config {exc}") from None


def sandbox_plan(sandbox_id: str, config: config_mod.Config, task_id: str,
                 spec: dict[str, Any], annotations: dict[str, str]) -> SandboxPlan:
    """The plan of the VM that task_id, the sandbox's first container, brings up."""
    pod_sandbox = annotations.get(CONTAINER_TYPE) == "sandbox"
    try:
        return plan_sandbox(sandbox_id, config, task_id, spec, annotations, pod_sandbox)
    except PlanError as exc:
        raise TtrpcError(Code.INVALID_ARGUMENT, str(exc)) from None
