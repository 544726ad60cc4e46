"""The sandbox's 9p share: a bounded tmpfs per sandbox, and one per container inside it.

The guest can rename, replace or symlink anything in the share at any moment, so the host
holds fds instead of paths: the share root and every container directory are tmpfs mounts
the host made and keeps an fd of (a mount point cannot be renamed or replaced while mounted),
everything inside a container's directory is created relative to that fd, and removal detaches
exactly the mount the fd holds. Crash-only cleanup, which has no fds, detaches by names whose
parents are the host's own (the state dir, `shared`, a container id) without following the
last one. The tmpfs sizes bound what a guest can store outside its rootfs and volumes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from bulkhead.sandbox import mount_fd
from bulkhead.sandbox.image_view import LayeredSnapshot, mount_image_view, view_name
from bulkhead.sandbox.tree_removal import remove_tree

SHARED = "shared"  # the share's name in the sandbox state dir
# The share root holds one mount point per container; a container's directory holds its
# config.json and the mount points of its rootfs and volumes. Neither needs more.
ROOT_OPTIONS: dict[str, str | None] = {"size": "1m", "nr_inodes": "4096", "mode": "0700"}
CONTAINER_OPTIONS: dict[str, str | None] = {"size": "8m", "nr_inodes": "4096", "mode": "0755"}
TMPFS_ATTRS = mount_fd.SAFE_ATTRS | mount_fd.MOUNT_ATTR_NOEXEC


class ShareError(OSError):
    """The share, or a container's part of it, could not be set up; names which."""


@dataclass
class ContainerDir:
    """One container's directory in the share, held by the fd of its tmpfs root."""

    container_id: str
    fd: int
    mount_id: int


@dataclass
class Share:
    """The sandbox's share, mounted at <state_dir>/shared, and the containers' dirs in it."""

    state_dir: str
    root_fd: int = -1
    containers: dict[str, ContainerDir] = field(default_factory=dict)
    image_views: set[str] = field(default_factory=set)  # names mounted at the root, kept

    @property
    def path(self) -> str:
        """Where QEMU exports it from."""
        return os.path.join(self.state_dir, SHARED)

    def create(self) -> None:
        """Mount the share's tmpfs (before QEMU opens it); the state dir must exist."""
        if self.root_fd >= 0:
            return
        state_fd = os.open(self.state_dir, mount_fd.DIR_FLAGS)
        try:
            self.root_fd = _new_tmpfs_at(state_fd, SHARED, ROOT_OPTIONS, 0o700,
                                         f"share of {self.state_dir}")
        finally:
            os.close(state_fd)

    def add_container(self, container_id: str) -> ContainerDir:
        """A fresh directory for a container (its own tmpfs); refuses an id already there."""
        if container_id in self.containers:
            raise ShareError(errno.EEXIST,
                             f"container {container_id}: already has a share directory")
        if self.root_fd < 0:
            raise ShareError(errno.ENOENT, f"container {container_id}: the share is not mounted")
        fd = _new_tmpfs_at(self.root_fd, container_id, CONTAINER_OPTIONS, 0o755,
                           f"share directory of container {container_id}")
        cdir = ContainerDir(container_id, fd, mount_fd.mount_id(fd))
        self.containers[container_id] = cdir
        return cdir

    def image_view(self, snapshot: LayeredSnapshot, empty_layer: str) -> str:
        """The name of the view of snapshot's image layers, mounted on first use (image_view)."""
        name = view_name(snapshot)
        if name not in self.image_views:
            if self.root_fd < 0:
                raise ShareError(errno.ENOENT, "image view: the share is not mounted")
            mount_image_view(snapshot, self.root_fd, name, empty_layer)
            self.image_views.add(name)
        return name

    def remove_container(self, container_id: str) -> list[str]:
        """Detach a container's tmpfs (and its rootfs and volume mounts), remove its name."""
        cdir = self.containers.pop(container_id, None)
        if cdir is not None:
            try:
                mount_fd.detach(cdir.fd, f"share directory of container {container_id}")
            finally:
                os.close(cdir.fd)
        if self.root_fd < 0:
            return []
        return remove_tree(self.root_fd, container_id, self.path)

    def remove(self) -> list[str]:
        """Detach the whole share with every mount in it and remove it; returns what was left."""
        for cdir in self.containers.values():
            os.close(cdir.fd)
        self.containers.clear()
        self.image_views.clear()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        return remove_state_dir(self.state_dir)


def _new_tmpfs_at(dir_fd: int, name: str, options: Mapping[str, str | None], mode: int,
                  what: str) -> int:
    """mkdirat name (never an existing one), attach a new tmpfs on it; returns its root fd."""
    try:
        point = mount_fd.make_dir(dir_fd, name, mode)
    except FileExistsError:
        raise ShareError(errno.EEXIST, f"{what}: {name} already exists in the share") from None
    except OSError as exc:
        raise ShareError(exc.errno, f"{what}: {exc.strerror}") from None
    try:
        tree = mount_fd.fs_mount("tmpfs", dict(options), TMPFS_ATTRS, what)
        try:
            mount_fd.attach(tree, point, what)
        except BaseException:
            os.close(tree)
            raise
    finally:
        os.close(point)
    return tree


def remove_container_dir(state_dir: str, container_id: str) -> list[str]:
    """Crash-only: detach and remove a container's directory by name, following nothing."""
    share = os.path.join(state_dir, SHARED)
    mount_fd.detach_path(os.path.join(share, container_id))
    try:
        root = os.open(share, mount_fd.DIR_FLAGS)
    except FileNotFoundError:
        return []
    try:
        return remove_tree(root, container_id, share)
    finally:
        os.close(root)


def remove_state_dir(state_dir: str) -> list[str]:
    """Detach the share (all mounts in it go with it), then remove the state dir's tree."""
    mount_fd.detach_path(os.path.join(state_dir, SHARED))
    parent, name = os.path.split(state_dir.rstrip("/"))
    try:
        parent_fd = os.open(parent, mount_fd.DIR_FLAGS)
    except FileNotFoundError:
        return []
    try:
        left = remove_tree(parent_fd, name, parent)
    finally:
        os.close(parent_fd)
    return left
