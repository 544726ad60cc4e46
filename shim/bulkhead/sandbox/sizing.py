"""A pod's VM size from the CRI sandbox annotations (pod-level resources from the kubelet).

The VM gets the pod's memory limit plus a fixed overhead for the guest kernel and the agent,
and as many vCPUs as the pod's CPU quota covers; the config's size applies where the pod says
nothing. Containers get their own limits inside, through the guest's cgroups.
"""

from __future__ import annotations

import dataclasses
import math
import os

from bulkhead.config import Config

MIN_VM_MEMORY_MIB = 128  # below this the guest kernel and agent leave nothing for containers
MEMORY = "io.kubernetes.cri.sandbox-memory"
CPU_QUOTA = "io.kubernetes.cri.sandbox-cpu-quota"
CPU_PERIOD = "io.kubernetes.cri.sandbox-cpu-period"


class SizingError(Exception):
    """The pod's resources cannot make a VM; the message names the figure and the minimum."""


def _number(annotations: dict[str, str], key: str) -> int:
    """An integer annotation (0 when absent)."""
    text = annotations.get(key, "").strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise SizingError(f"annotation {key}={text!r} is not an integer") from None


def for_pod(config: Config, annotations: dict[str, str]) -> Config:
    """A copy of config sized for the pod whose sandbox carries these annotations."""
    sized = dataclasses.replace(config)
    memory = _number(annotations, MEMORY)
    if memory > 0:
        pod_mib = math.ceil(memory / (1 << 20))
        sized.memory_mib = pod_mib + config.pod_overhead_mib
        if sized.memory_mib < MIN_VM_MEMORY_MIB:
            minimum = MIN_VM_MEMORY_MIB - config.pod_overhead_mib
            raise SizingError(f"pod memory limit {pod_mib} MiB is below the minimum of "
                              f"{minimum} MiB (a Bulkhead VM needs {MIN_VM_MEMORY_MIB} MiB with "
                              f"its {config.pod_overhead_mib} MiB overhead)")
    quota, period = _number(annotations, CPU_QUOTA), _number(annotations, CPU_PERIOD)
    if quota > 0 and period > 0:
        ceiling = config.max_vcpus or os.cpu_count() or 1
        sized.vcpus = max(1, min(math.ceil(quota / period), ceiling))
    return sized
