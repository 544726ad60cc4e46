"""A read-only view of a container's image layers in the share, for the guest's cached mount.

A container whose snapshot is containerd's overlay (image layers below, an empty writable
snapshot on top) gets its root assembled in the guest (bulkhead_agent.rootfs_layer): the
layers are read through a 9p mount with the guest's caches on, which is only correct for
files that never change while the guest holds them. So the view holds the image layers alone
(never the writable snapshot, which the agent writes back into), read-only on the host.

One view per image per sandbox, at the share's root, kept until the sandbox ends: the guest's
9p client keys its inodes by the host's device and inode numbers, so a view unmounted and
another mounted later could get the freed device number and meet the guest's cache of the
first; and containers of a pod with one image share one cache. The name starts with a dot,
which no container id can (containerd's identifiers start with a letter or digit).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from bulkhead_wire.proto import mount_pb2

from bulkhead.sandbox import mount_fd
from bulkhead.sandbox.mounts import MS_NODEV, MS_NOSUID, MS_RDONLY

VIEW_PREFIX = ".image-"


@dataclass(frozen=True)
class LayeredSnapshot:
    """containerd's overlay snapshot split into what the guest caches and what it writes."""

    lowerdirs: tuple[str, ...]  # the image layers, topmost first
    upperdir: str  # the container's writable snapshot: the write-back lands here


def layered_snapshot(m: mount_pb2.Mount) -> LayeredSnapshot | None:
    """The layers of an overlay mount whose writable snapshot is still empty, else None.

    A snapshot with content (a task started again in the same container) keeps the coherent
    path: its upper layer may change under the guest, so it may not be cached."""
    if m.type != "overlay":
        return None
    opts = dict(o.split("=", 1) for o in m.options if "=" in o)
    lower, upper = opts.get("lowerdir", ""), opts.get("upperdir", "")
    if not lower or not upper or "ro" in m.options:
        return None
    try:
        with os.scandir(upper) as it:
            if next(it, None) is not None:
                return None
    except OSError:
        return None
    return LayeredSnapshot(tuple(lower.split(":")), upper)


def view_name(snapshot: LayeredSnapshot) -> str:
    """The share-root name of the view of these layers (the same layers, the same name)."""
    digest = hashlib.sha256("\0".join(snapshot.lowerdirs).encode()).hexdigest()
    return VIEW_PREFIX + digest[:20]


def mount_image_view(snapshot: LayeredSnapshot, root_fd: int, name: str,
                     empty_layer: str) -> None:
    """Mount the image layers read-only (nosuid, nodev) as name in the share's root (a new
    directory: one the guest made first is refused).

    Always an overlay, so each view has a device of its own (a bind would show the layer's
    inodes again under each name); a single layer gets empty_layer, an empty host-only
    directory, as the second layer overlayfs needs."""
    lowers = list(snapshot.lowerdirs)
    if len(lowers) == 1:
        os.makedirs(empty_layer, 0o555, exist_ok=True)
        if os.listdir(empty_layer):
            raise mount_fd.FdMountError(0, f"image view: {empty_layer} is not empty")
        lowers.append(empty_layer)
    target = mount_fd.make_dir(root_fd, name)
    try:
        mount_fd.mount_on(target, "overlay", "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV,
                          "lowerdir=" + ":".join(lowers), "image view")
    finally:
        os.close(target)
