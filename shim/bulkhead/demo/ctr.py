"""Running ctr: one binary against one containerd address, in one default namespace."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bulkhead.demo.errors import ContainerdError, CtrError

DEMO_NAMESPACE = "bulkhead-demo"


@dataclass
class CtrClient:
    """Runs one ctr binary against one containerd address, in one default namespace."""

    ctr_bin: Path
    address: Path
    namespace: str = DEMO_NAMESPACE

    def ctr_argv(self, *args: str, namespace: str | None = None) -> list[str]:
        ns = namespace or self.namespace
        return [str(self.ctr_bin), "--address", str(self.address), "--namespace", ns, *args]

    def ctr(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = 60.0,
        namespace: str | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ctr; with check, a non-zero exit raises CtrError carrying stderr."""
        argv = self.ctr_argv(*args, namespace=namespace)
        try:
            res = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerdError(f"{' '.join(argv)} did not finish within {timeout} s") from exc
        if check and res.returncode != 0:
            raise CtrError(res.returncode, argv, res.stdout, res.stderr)
        return res

    def import_image(
        self, tar: Path | str, timeout: float = 120.0, namespace: str | None = None
    ) -> str:
        """Import (and unpack for the default snapshotter) an OCI archive; returns ctr's output."""
        return self.ctr("images", "import", str(tar), timeout=timeout, namespace=namespace).stdout

    def lines(self, *args: str, namespace: str | None = None) -> list[str]:
        """Non-empty output lines of a quiet listing command (e.g. `task ls -q`)."""
        out = self.ctr(*args, namespace=namespace, timeout=30).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]
