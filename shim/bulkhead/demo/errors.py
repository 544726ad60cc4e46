"""The errors of a private containerd and of the ctr commands run against it."""

from __future__ import annotations

import subprocess


class ContainerdError(RuntimeError):
    """A private containerd could not be found, started, used or cleaned up."""


class CtrError(subprocess.CalledProcessError):
    """A `ctr` command failed; str() carries its argv, exit status and stderr."""

    def __str__(self) -> str:
        err = (self.stderr or "").strip()
        return f"{' '.join(map(str, self.cmd))} exited with status {self.returncode}: {err}"
