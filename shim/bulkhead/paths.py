"""Well-known locations; every one can be overridden through the environment for tests."""

from __future__ import annotations

import os

from bulkhead_wire.checks import check_id

SOCKET_DIR = "/run/containerd/s"  # containerd's compile-time constant, not its state dir
RUN_DIR = os.environ.get("BULKHEAD_RUN_DIR", "/run/bulkhead")
GUEST_DIR = os.environ.get("BULKHEAD_GUEST_DIR", "/usr/local/share/bulkhead/guest")
CONFIG_FILE = os.environ.get("BULKHEAD_CONFIG", "/etc/bulkhead/config.toml")


def sandbox_dir(namespace: str, sandbox_id: str) -> str:
    """State directory of one sandbox (one VM): sockets, console log, state file, shared dir.
    Both names come from containerd's callers (a pod's sandbox-id annotation is anyone's
    text): ValueError unless each is one plain file name, so the path stays under RUN_DIR."""
    check_id("namespace", namespace)
    check_id("sandbox", sandbox_id)
    return os.path.join(RUN_DIR, namespace, sandbox_id)
