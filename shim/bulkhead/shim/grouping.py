"""Which shim (and so which VM) a container belongs to, and that shim's socket address."""

from __future__ import annotations

import hashlib
import os
import socket

from bulkhead.oci_spec import SpecError, read_spec
from bulkhead.paths import SOCKET_DIR

CONTAINER_TYPE = "io.kubernetes.cri.container-type"  # "sandbox" or "container"
CONTAINER_TYPE_KEYS = (
    (CONTAINER_TYPE, "container"),
    ("io.kubernetes.cri-o.ContainerType", "container"),
    ("io.kubernetes.docker.type", "container"),
)
SANDBOX_ID_KEYS = (
    "io.kubernetes.cri.sandbox-id",
    "io.kubernetes.cri-o.SandboxID",
    "io.kubernetes.sandbox.id",
)


BundleError = SpecError  # what `start` and `delete` report for an unusable config.json


def read_annotations(bundle: str) -> dict[str, str]:
    """Annotations of the bundle's OCI spec; a clear error if config.json is unusable."""
    spec = read_spec(bundle)
    try:
        return annotations_of(spec)
    except SpecError as exc:
        raise SpecError(f"{os.path.join(bundle, 'config.json')}: {exc}") from None


def annotations_of(spec: dict[str, object]) -> dict[str, str]:
    """The annotations of a parsed OCI spec, as strings."""
    ann = spec.get("annotations") or {}
    if not isinstance(ann, dict):
        raise SpecError("malformed OCI spec: annotations is not an object")
    return {str(k): str(v) for k, v in ann.items()}


def sandbox_key(task_id: str, annotations: dict[str, str]) -> tuple[str, bool]:
    """(sandbox id, joins_existing): pod containers join their sandbox's shim and VM."""
    for type_key, container_value in CONTAINER_TYPE_KEYS:
        if type_key in annotations:
            if annotations[type_key] != container_value:
                return task_id, False
            for sid_key in SANDBOX_ID_KEYS:
                sid = annotations.get(sid_key)
                if sid:
                    return sid, True
            return task_id, False
    return task_id, False


def socket_path(address: str, namespace: str, key: str) -> str:
    """containerd's convention: /run/containerd/s/sha256(address/namespace/key)."""
    digest = hashlib.sha256(os.path.join(address, namespace, key).encode()).hexdigest()
    return os.path.join(SOCKET_DIR, digest)


def shim_listening(path: str) -> bool:
    """True if a live shim accepts connections on path (a stale socket refuses them)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
