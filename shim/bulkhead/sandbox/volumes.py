"""Host bind mounts of an OCI spec (volumes), shared into the guest through the pod's share.

Each source is bind-mounted under the container's part of the shared directory (read-only
when the spec asks), and the spec's mount is rewritten to the guest path of that copy, so
crun in the guest binds it where the spec says. What cannot cross into a VM is an error that
names the mount, never a silent drop.
"""

from __future__ import annotations

import copy
import os
import stat
from typing import Any

from bulkhead.sandbox.mounts import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, MountError, mount

VOLUMES_DIR = "volumes"
# The pod's /dev/shm: one tmpfs in the guest (the agent mounts it), bound into every container
# of the pod, so POSIX shared memory works between them as under runc. The host's shm tmpfs
# that containerd binds is not shared over 9p: it would not be shared memory in the guest.
POD_SHM = "/run/bulkhead/pod-shm"


class VolumeError(Exception):
    """A bind mount of the spec cannot be shared into the VM; the message names it."""


def is_bind(m: dict[str, Any]) -> bool:
    """A bind mount, by type or by option (ctr writes type "bind" with rbind/bind options)."""
    options = m.get("options") or []
    return m.get("type") == "bind" or "bind" in options or "rbind" in options


def _describe(m: dict[str, Any]) -> str:
    return f"bind mount {m.get('source')!r} -> {m.get('destination')!r}"


def _prepare_target(source: str, target: str, what: str) -> None:
    """An empty directory or file to mount over, matching the source's kind."""
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise VolumeError(f"{what}: the source does not exist on the host") from None
    except OSError as exc:
        raise VolumeError(f"{what}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        os.makedirs(target, exist_ok=True)
    elif stat.S_ISREG(st.st_mode):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    else:
        kind = ("a socket" if stat.S_ISSOCK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device node")
        raise VolumeError(f"{what}: the source is {kind}, which cannot be shared into the VM "
                          "(only directories and regular files can)")


def share(mounts: list[dict[str, Any]], host_bundle: str, guest_bundle: str
          ) -> list[dict[str, Any]]:
    """Bind every bind mount's source under host_bundle/volumes; return the guest's mounts."""
    out: list[dict[str, Any]] = []
    for n, m in enumerate(mounts):
        if not is_bind(m):
            out.append(m)
            continue
        if m.get("destination") == "/dev/shm":
            out.append(dict(copy.deepcopy(m), source=POD_SHM, type="bind"))
            continue
        what = _describe(m)
        source = m.get("source")
        if not isinstance(source, str) or not os.path.isabs(source):
            raise VolumeError(f"{what}: the source must be an absolute host path")
        options = [str(o) for o in m.get("options") or []]
        name = f"{n}-{os.path.basename(source.rstrip('/')) or 'root'}"
        target = os.path.join(host_bundle, VOLUMES_DIR, name)
        _prepare_target(source, target, what)
        flags = MS_BIND | (MS_REC if "rbind" in options else 0)
        try:
            mount(source, target, "", flags)
            if "ro" in options:
                mount("", target, "", MS_BIND | MS_REMOUNT | MS_RDONLY | (flags & MS_REC))
        except MountError as exc:
            raise VolumeError(f"{what}: {exc}") from None
        guest = copy.deepcopy(m)
        guest["source"] = f"{guest_bundle}/{VOLUMES_DIR}/{name}"
        guest["type"] = "bind"
        out.append(guest)
    return out
