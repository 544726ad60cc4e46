"""A container's bundle as the guest sees it: rootfs, volumes and config.json in the share.

Everything lives under the container's directory of the pod's shared dir, so cleanup (here,
in `delete`, or after a crash) is one recursive unmount and removal of that directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from bulkhead_wire.proto import mount_pb2

from bulkhead.sandbox import volumes
from bulkhead.sandbox.guest_spec import for_guest, host_root_path
from bulkhead.sandbox.rootfs import mount_rootfs


def prepare(container_id: str, spec: dict[str, Any], bundle: str,
            rootfs: Sequence[mount_pb2.Mount], host_dir: str, guest_dir: str,
            sandbox_pid: int = 0, vm_network: bool = False) -> None:
    """Mount the rootfs and the volumes under host_dir and write the guest's config.json.

    Raises RootfsError, MountError or VolumeError naming what failed; the caller removes
    host_dir then (mounts.remove_mounted_tree).
    """
    os.makedirs(host_dir, exist_ok=True)
    mount_rootfs(list(rootfs), os.path.join(host_dir, "rootfs"), host_root_path(spec, bundle))
    spec = dict(spec, mounts=volumes.share(list(spec.get("mounts") or []), host_dir, guest_dir))
    tmp = os.path.join(host_dir, ".config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(for_guest(spec, container_id, sandbox_pid, vm_network), f)
    os.rename(tmp, os.path.join(host_dir, "config.json"))

