"""Host bind mounts of an OCI spec (volumes), shared into the guest through the pod's share.

Each source is bind-mounted under the container's part of the shared directory through fds
only (nosuid,nodev always; read-only on every mount of its tree when the spec asks), and the
spec's mount is rewritten to the guest path of that copy, so crun in the guest binds it where
the spec says. What cannot cross into a VM is an error that
names the mount, never a silent drop.
"""

from __future__ import annotations

import copy
import errno
import os
import stat
from typing import Any

from bulkhead_wire.guest_abi import GUEST_POD_SHM_DIR

from bulkhead.sandbox import mount_fd

VOLUMES_DIR = "volumes"


class VolumeError(Exception):
    """A bind mount of the spec cannot be shared into the VM; the message names it."""


def is_bind(m: dict[str, Any]) -> bool:
    """A bind mount, by type or by option (ctr writes type "bind" with rbind/bind options)."""
    options = m.get("options") or []
    return m.get("type") == "bind" or "bind" in options or "rbind" in options


def _describe(m: dict[str, Any]) -> str:
    return f"bind mount {m.get('source')!r} -> {m.get('destination')!r}"


def _target_for(tree_fd: int, volumes_fd: int, name: str, what: str) -> int:
    """A new empty directory or file to mount over, matching the kind of what tree_fd holds
    (the very source that will be mounted: no window to swap it after the check)."""
    st = os.fstat(tree_fd)
    if stat.S_ISDIR(st.st_mode):
        return mount_fd.make_dir(volumes_fd, name)
    if stat.S_ISREG(st.st_mode):
        return mount_fd.make_file(volumes_fd, name)
    kind = ("a socket" if stat.S_ISSOCK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
            else "a device node")
    raise VolumeError(f"{what}: the source is {kind}, which cannot be shared into the VM "
                      "(only directories and regular files can)")


def _bind(source: str, options: list[str], volumes_fd: int, name: str, what: str) -> None:
    """Bind source under volumes_fd/name: nosuid,nodev on the host, and read-only on every
    mount of the tree when the spec says ro or rro (a bind's ro is only its top otherwise)."""
    recursive = "rbind" in options or "rro" in options
    readonly = "ro" in options or "rro" in options
    try:
        tree = mount_fd.clone_tree(source, recursive, what)
    except mount_fd.FdMountError as exc:
        if exc.errno == errno.ENOENT:
            raise VolumeError(f"{what}: the source does not exist on the host") from None
        raise VolumeError(f"{what}: {exc.strerror}") from None
    try:
        target = _target_for(tree, volumes_fd, name, what)
        try:
            attrs = mount_fd.SAFE_ATTRS | (mount_fd.MOUNT_ATTR_RDONLY if readonly else 0)
            mount_fd.set_attrs(tree, attrs, recursive, what)
            mount_fd.attach(tree, target, what)
        finally:
            os.close(target)
    except mount_fd.FdMountError as exc:
        raise VolumeError(str(exc)) from None
    except FileExistsError:
        raise VolumeError(f"{what}: {VOLUMES_DIR}/{name} already exists in the share "
                          "(the guest changed it)") from None
    finally:
        os.close(tree)


def _volumes_dir(cdir_fd: int) -> int:
    """The container's new volumes/ directory (a name the guest took first is refused)."""
    try:
        return mount_fd.make_dir(cdir_fd, VOLUMES_DIR)
    except FileExistsError:
        raise VolumeError(f"{VOLUMES_DIR} already exists in the container's share directory "
                          "(the guest changed it)") from None


def _guest_options(options: list[str]) -> list[str]:
    """The guest's bind of the share copy: its ro is one mount there, so rro becomes ro."""
    return ["ro" if o == "rro" else o for o in options]


def share(mounts: list[dict[str, Any]], cdir_fd: int, guest_bundle: str
          ) -> list[dict[str, Any]]:
    """Bind every bind mount's source under cdir_fd's volumes/; return the guest's mounts."""
    out: list[dict[str, Any]] = []
    volumes_fd = -1
    try:
        for n, m in enumerate(mounts):
            if not is_bind(m):
                out.append(m)
                continue
            if m.get("destination") == "/dev/shm":
                # The pod's /dev/shm: one tmpfs in the guest (the agent mounts it), bound into
                # every container of the pod, so POSIX shared memory works between them as under
                # runc. The host's shm tmpfs that containerd binds is not shared over 9p: it
                # would not be shared memory in the guest.
                out.append(dict(copy.deepcopy(m), source=GUEST_POD_SHM_DIR, type="bind"))
                continue
            what = _describe(m)
            source = m.get("source")
            if not isinstance(source, str) or not os.path.isabs(source):
                raise VolumeError(f"{what}: the source must be an absolute host path")
            if volumes_fd < 0:
                volumes_fd = _volumes_dir(cdir_fd)
            options = [str(o) for o in m.get("options") or []]
            name = f"{n}-{os.path.basename(source.rstrip('/')) or 'root'}"
            _bind(source, options, volumes_fd, name, what)
            guest = copy.deepcopy(m)
            guest["source"] = f"{guest_bundle}/{VOLUMES_DIR}/{name}"
            guest["type"] = "bind"
            guest["options"] = _guest_options(options)
            out.append(guest)
    finally:
        if volumes_fd >= 0:
            os.close(volumes_fd)
    return out
