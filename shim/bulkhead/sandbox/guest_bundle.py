"""A container's bundle as the guest sees it: rootfs, volumes and config.json in the share.

Everything is created relative to the fd of the container's directory in the share (its own
tmpfs, see share.py), so removing that one mount removes every mount made for the container.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable, Sequence
from typing import Any

from bulkhead_wire.guest_abi import GUEST_CACHED_SHARE_DIR
from bulkhead_wire.proto import mount_pb2

from bulkhead.sandbox import mount_fd, volumes
from bulkhead.sandbox.guest_spec import for_guest, host_root_path
from bulkhead.sandbox.image_view import LayeredSnapshot
from bulkhead.sandbox.mount_points import destinations
from bulkhead.sandbox.rootfs import mount_rootfs

CONFIG = "config.json"
log = logging.getLogger(__name__)


def prepare(container_id: str, spec: dict[str, Any], bundle: str,
            rootfs: Sequence[mount_pb2.Mount], cdir_fd: int, guest_dir: str,
            sandbox_pid: int = 0, vm_network: bool = False, staging: str = "",
            views: Callable[[LayeredSnapshot], str] | None = None) -> str:
    """Mount the rootfs and the volumes under cdir_fd and write the guest's config.json.

    Raises RootfsError, VolumeError or OSError naming what failed; the caller removes the
    container's directory then (Share.remove_container). staging: a host-only path for the
    private mount that makes a read-only root's mount points. views: where the guest may
    assemble the root, what gives the name of an image view in the share (Share.image_view);
    returns that name when the root is layered, else "" (a view that cannot be made leaves
    the container on the shared root, with a warning).
    """
    root: dict[str, Any] = spec["root"] if isinstance(spec.get("root"), dict) else {}
    mounts = list(spec.get("mounts") or [])
    points = destinations(mounts, _file_binds(mounts)) if root.get("readonly") else []
    snapshot = mount_rootfs(list(rootfs), cdir_fd, host_root_path(spec, bundle),
                            bool(root.get("readonly")), points, staging, views is not None)
    view = ""
    if snapshot is not None and views is not None:
        try:
            view = views(snapshot)
        except OSError as exc:
            log.warning("container %s: no layered root, the image view failed: %s",
                        container_id, exc)
    spec = dict(spec, mounts=volumes.share(mounts, cdir_fd, guest_dir))
    data = json.dumps(for_guest(spec, container_id, sandbox_pid, vm_network,
                                layered=bool(view))).encode()
    mount_fd.write_file(cdir_fd, CONFIG, data)
    return view


def guest_image_view(container_id: str, view: str) -> str:
    """Guest path of a container's image view through the guest's cached mount of the share."""
    return f"{GUEST_CACHED_SHARE_DIR}/{view}" if view else ""


def _file_binds(mounts: list[dict[str, Any]]) -> set[str]:
    """Destinations of bind mounts whose host source is a regular file (their mount point is
    a file, not a directory)."""
    out = set()
    for m in mounts:
        source, dest = m.get("source"), m.get("destination")
        if volumes.is_bind(m) and isinstance(source, str) and isinstance(dest, str):
            try:
                if stat.S_ISREG(os.stat(source).st_mode):
                    out.add(os.path.normpath(dest))
            except OSError:
                pass
    return out
