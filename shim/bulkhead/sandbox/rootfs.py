"""Mount a container's rootfs (containerd snapshot mounts) into its directory of the share.

The mount point is made and held through the container directory's fd, so the guest cannot
redirect the mount by renaming or symlinking; the mount is nosuid,nodev on the host, and
read-only there too when the spec's root is. A writable overlay snapshot may also have its
image layers shared alone (image_view), from which the guest assembles the root itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from bulkhead_wire.proto import mount_pb2

from bulkhead.sandbox import mount_fd
from bulkhead.sandbox.image_view import LayeredSnapshot, layered_snapshot
from bulkhead.sandbox.mount_points import make_mount_point
from bulkhead.sandbox.mounts import MS_BIND, MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REC

log = logging.getLogger(__name__)

ROOTFS = "rootfs"
# mount(8)-style flag options that are not filesystem data.
FLAG_OPTIONS = {"rw": 0, "ro": MS_RDONLY, "bind": MS_BIND, "rbind": MS_BIND | MS_REC}


class RootfsError(Exception):
    """The snapshot mounts could not be applied."""


def mount_rootfs(mounts: list[mount_pb2.Mount], cdir_fd: int, fallback_dir: str,
                 readonly: bool, points: Sequence[tuple[str, bool]] = (), staging: str = "",
                 layered: bool = False) -> LayeredSnapshot | None:
    """Apply containerd's mounts at cdir_fd/rootfs; with none (ctr --rootfs), bind the spec's
    root. readonly: the spec's root.readonly, enforced on the host mount too; the mount points
    (destination, is_file) are then made first, through a private rw mount at staging (a path
    the guest cannot reach). layered: the guest may assemble the root; returns the snapshot's
    layers then if it allows (writable, still empty: image_view), else None."""
    points = points if readonly else ()
    target = mount_fd.make_dir(cdir_fd, ROOTFS)
    try:
        if not mounts:
            if not os.path.isdir(fallback_dir):
                raise RootfsError(f"no rootfs mounts given and root path {fallback_dir} "
                                  "is not a directory")
            _bind(fallback_dir, target, True, readonly, points)
            return None
        if len(mounts) > 1:
            raise RootfsError(f"{len(mounts)} rootfs mounts given; only one is supported")
        m = mounts[0]
        flags, data = 0, []
        for opt in m.options:
            if opt in FLAG_OPTIONS:
                flags |= FLAG_OPTIONS[opt]
            else:
                data.append(opt)
        if flags & MS_BIND:
            _bind(m.source, target, bool(flags & MS_REC), readonly or bool(flags & MS_RDONLY),
                  points)
            return None
        flags |= MS_NOSUID | MS_NODEV
        if points:
            _staged_mount_points(m, flags, ",".join(data), points, staging)
        flags |= MS_RDONLY if readonly else 0
        mount_fd.mount_on(target, m.source, m.type, flags, ",".join(data), "rootfs")
        return layered_snapshot(m) if layered and not readonly else None
    except mount_fd.FdMountError as exc:
        raise RootfsError(str(exc)) from None
    finally:
        os.close(target)


def _make_points(root_fd: int, points: Sequence[tuple[str, bool]]) -> None:
    """Make each mount point; one that cannot be made is left to crun to report."""
    for dest, is_file in points:
        try:
            make_mount_point(root_fd, dest, is_file)
        except OSError as exc:
            log.debug("rootfs: mount point %s not made: %s", dest, exc)


def _staged_mount_points(m: mount_pb2.Mount, flags: int, data: str,
                         points: Sequence[tuple[str, bool]], staging: str) -> None:
    """Mount the snapshot rw at a host-only staging dir, make the mount points, unmount."""
    os.mkdir(staging, 0o700)
    try:
        point = os.open(staging, mount_fd.DIR_FLAGS)
        try:
            mount_fd.mount_on(point, m.source, m.type, flags, data, "rootfs (staging)")
        finally:
            os.close(point)
        try:
            root = os.open(staging, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _make_points(root, points)
            finally:
                os.close(root)
        finally:
            mount_fd.detach_path(staging)
    finally:
        os.rmdir(staging)


def _bind(source: str, target_fd: int, recursive: bool, readonly: bool,
          points: Sequence[tuple[str, bool]]) -> None:
    """Bind source at target_fd with nosuid,nodev (and ro) on every mount of the tree."""
    tree = mount_fd.clone_tree(source, recursive, "rootfs bind")
    try:
        _make_points(tree, points)
        attrs = mount_fd.SAFE_ATTRS | (mount_fd.MOUNT_ATTR_RDONLY if readonly else 0)
        mount_fd.set_attrs(tree, attrs, recursive, "rootfs bind")
        mount_fd.attach(tree, target_fd, "rootfs bind")
    finally:
        os.close(tree)
