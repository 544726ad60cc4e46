"""The sandbox state file: what `delete` needs to clean up after a crash (the shim's pid and
socket, QEMU's host cgroups), and what `bulkhead ps` and the metrics show (its containers).

Crash-only rule: a resource is recorded (or lives under the state directory) before it is
created, so `delete` can always find and remove it even if the daemon was SIGKILLed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from bulkhead.private_files import write_private

STATE_FILE = "state.json"
SHIM_LOG = "shim.log"  # the shim's own log, rotated to shim.log.1 (`bulkhead logs`)


@dataclass
class SandboxState:
    """Persistent facts of one sandbox."""

    sandbox_id: str
    namespace: str
    shim_pid: int
    socket: str
    containers: list[str] = field(default_factory=list)  # for `bulkhead ps` and the metrics
    host_cgroups: list[str] = field(default_factory=list)  # QEMU's, in each hierarchy

    def save(self, state_dir: str) -> None:
        """Write atomically so a crash never leaves a half-written file."""
        write_private(os.path.join(state_dir, STATE_FILE), json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, state_dir: str) -> SandboxState | None:
        """The recorded state, or None if there is none (or it is unreadable)."""
        try:
            with open(os.path.join(state_dir, STATE_FILE)) as f:
                raw = json.load(f)
            return cls(**raw)
        except (OSError, ValueError, TypeError):
            return None


def remove_empty_parent(state_dir: str) -> None:
    """Drop the per-namespace directory once its last sandbox is gone."""
    try:
        os.rmdir(os.path.dirname(state_dir))
    except OSError:
        pass  # not empty, or already gone
