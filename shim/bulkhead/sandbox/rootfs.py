"""Mount a container's rootfs (containerd snapshot mounts) into the pod's shared directory."""

from __future__ import annotations

import os

from bulkhead_wire.proto import mount_pb2

from bulkhead.sandbox.mounts import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, mount, umount

# mount(8)-style flag options that are not filesystem data.
FLAG_OPTIONS = {"rw": 0, "ro": MS_RDONLY, "bind": MS_BIND, "rbind": MS_BIND | MS_REC}


class RootfsError(Exception):
    """The snapshot mounts could not be applied."""


def mount_rootfs(mounts: list[mount_pb2.Mount], target: str, fallback_dir: str) -> None:
    """Apply containerd's mounts at target; with none (ctr --rootfs), bind the spec's root."""
    os.makedirs(target, exist_ok=True)
    if not mounts:
        if not os.path.isdir(fallback_dir):
            raise RootfsError(f"no rootfs mounts given and root path {fallback_dir} "
                              "is not a directory")
        mount(fallback_dir, target, "", MS_BIND | MS_REC)
        return
    if len(mounts) > 1:
        raise RootfsError(f"{len(mounts)} rootfs mounts given; only one is supported")
    m = mounts[0]
    flags, data = 0, []
    for opt in m.options:
        if opt in FLAG_OPTIONS:
            flags |= FLAG_OPTIONS[opt]
        else:
            data.append(opt)
    fstype = "" if flags & MS_BIND else m.type
    mount(m.source, target, fstype, flags, ",".join(data))
    if flags & MS_BIND and flags & MS_RDONLY:
        mount("", target, "", MS_BIND | MS_RDONLY | MS_REMOUNT)  # a bind is ro only then


def unmount_rootfs(target: str) -> None:
    """Undo mount_rootfs; fine if nothing is mounted."""
    umount(target)
