"""Turn the host bundle's OCI spec into the one crun runs inside the guest."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from bulkhead_wire.guest_abi import GUEST_LAYERED_ROOT, GUEST_LAYERS_DIR

from bulkhead.oci_spec import SpecError, read_spec

log = logging.getLogger(__name__)


GUEST_OCI_VERSION = "1.0.2-dev"


def load_spec(bundle: str) -> dict[str, Any]:
    """Read the bundle's config.json and check what the guest needs from it."""
    spec = read_spec(bundle)
    path = os.path.join(bundle, "config.json")
    process = spec.get("process")
    if not isinstance(process, dict) or not isinstance(process.get("args"), list) \
            or not process["args"]:
        raise SpecError(f"{path}: process.args must be a non-empty list")
    if not isinstance(spec.get("root", {}), dict):
        raise SpecError(f"{path}: root must be an object")
    return spec


def host_root_path(spec: dict[str, Any], bundle: str) -> str:
    """The rootfs directory the spec names on the host (used when no snapshot mounts come)."""
    root = spec.get("root", {}).get("path", "rootfs")
    return root if os.path.isabs(root) else os.path.join(bundle, root)


# Namespaces a pod's containers share through the VM itself: the guest has one network (the
# pod's interfaces, configured by the agent), one hostname and one IPC space per pod.
VM_WIDE = ("network", "uts", "ipc")


def for_guest(spec: dict[str, Any], container_id: str, sandbox_pid: int = 0,
              vm_network: bool = False, layered: bool = False) -> dict[str, Any]:
    """A copy with host-only parts removed: rootfs path, namespace paths, hooks.

    A namespace the spec joins by path (a pod container joining its sandbox) is the VM's own
    for network, uts and ipc, and the sandbox container's in the guest (sandbox_pid) for the
    rest (pid when the pod shares one). With vm_network, the new network namespace a lone
    container asks for is the VM's (QEMU's own on the host, where CNI configures it). Bind
    mounts must already point into the share (sandbox.volumes rewrites them). layered: the
    root is the one the agent assembles (guest_abi.GUEST_LAYERS_DIR), else the bundle's rootfs.
    """
    out = json.loads(json.dumps(spec))
    out.setdefault("root", {})["path"] = (
        f"{GUEST_LAYERS_DIR}/{container_id}/{GUEST_LAYERED_ROOT}" if layered else "rootfs")
    if not str(out.get("ociVersion", "")).startswith("1.0"):
        # The guest's crun (1.8) refuses any 1.x but 1.0 ("unknown version specified"), while
        # containerd 1.7 writes 1.1.0-rc.1; the fields it uses exist in 1.0.2.
        out["ociVersion"] = GUEST_OCI_VERSION
    out.pop("hooks", None)
    process = out["process"]
    process.pop("apparmorProfile", None)
    process.pop("selinuxLabel", None)
    linux = out.setdefault("linux", {})
    linux.pop("mountLabel", None)
    namespaces = [ns for ns in linux.get("namespaces", [])
                  if not (vm_network and isinstance(ns, dict) and ns.get("type") == "network")]
    linux["namespaces"] = [guest_ns for ns in namespaces
                           if (guest_ns := _guest_namespace(ns, container_id, sandbox_pid))]
    if "sysctl" in linux:  # the VM's own namespaces take the pod's from SetupSandbox
        shared = vm_wide_sysctls(spec)
        linux["sysctl"] = {k: v for k, v in linux["sysctl"].items() if k not in shared}
    if not any(ns["type"] == "cgroup" for ns in linux["namespaces"]):
        # The guest is cgroup v2, where containerd and Docker give containers a private
        # cgroup namespace: /sys/fs/cgroup is then the container's own cgroup.
        linux["namespaces"].append({"type": "cgroup"})
    # The host's cgroup path (or a systemd slice spec) means nothing in the guest's cgroupfs.
    linux["cgroupsPath"] = f"/bulkhead/{container_id}"
    return out


def _guest_namespace(ns: dict[str, Any], container_id: str, sandbox_pid: int
                     ) -> dict[str, Any] | None:
    """The guest's version of one OCI namespace entry (None: use the VM's own)."""
    kind, path = str(ns.get("type")), ns.get("path")
    if not path:
        return {"type": kind}
    if kind in VM_WIDE:
        return None
    if sandbox_pid:
        return {"type": kind, "path": f"/proc/{sandbox_pid}/ns/{_PROC_NS.get(kind, kind)}"}
    log.info("%s: %s namespace path %s is a host path; the guest makes its own",
             container_id, kind, path)
    return {"type": kind}


def _sysctl_namespace(name: str) -> str:
    """Which namespace a sysctl lives in, as crun and runc decide it ("" for none)."""
    if name.startswith("net."):
        return "network"
    if name in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    if name.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")) or name == "kernel.sem":
        return "ipc"
    return ""


def vm_wide_sysctls(spec: dict[str, Any]) -> dict[str, str]:
    """The spec's sysctls for namespaces it joins by path (a pod's, which the VM's own
    namespaces stand for): crun would refuse them without a namespace of the container's."""
    linux = spec.get("linux")
    if not isinstance(linux, dict) or not isinstance(linux.get("sysctl"), dict):
        return {}
    joined = {ns.get("type") for ns in linux.get("namespaces", [])
              if isinstance(ns, dict) and ns.get("path") and ns.get("type") in VM_WIDE}
    return {str(k): str(v) for k, v in linux["sysctl"].items()
            if _sysctl_namespace(str(k)) in joined}


_PROC_NS = {"network": "net", "mount": "mnt"}  # OCI names that differ from /proc/<pid>/ns/


def network_namespace_path(spec: dict[str, Any]) -> str:
    """The network namespace the spec joins by path (a CRI pod's, set up by CNI), or ""."""
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    for ns in namespaces if isinstance(namespaces, list) else []:
        if isinstance(ns, dict) and ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    return ""


def wants_new_network_namespace(spec: dict[str, Any]) -> bool:
    """A network namespace without a path: runc would make one (ctr and nerdctl ask for it)."""
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    return any(isinstance(ns, dict) and ns.get("type") == "network" and not ns.get("path")
               for ns in (namespaces if isinstance(namespaces, list) else []))
