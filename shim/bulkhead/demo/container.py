"""The demo container: `ctr run --rm` of the demo image once, and the shim's boot-phase line
read back from a containerd log."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from bulkhead.demo.ctr import CtrClient

BULKHEAD_RUNTIME = "io.containerd.bulkhead.v2"
DEMO_IMAGE = "docker.io/bulkhead/demo:latest"
DEMO_IMAGE_TAR = Path("/usr/local/share/bulkhead/demo-image.tar")
# Who puts it there: the node installer on a node, `make install` in a development tree.
IMAGE_FIX = "`bulkhead node install` puts it there (`make install` in a development tree)"
BOOT_PHASES_MARKER = "boot phases"
DEMO_SCRIPT = (
    'echo "hello from the guest: kernel $(uname -r)"; '
    'echo "guest sees $(nproc) cpu(s) and $(awk \'/MemTotal/ {print $2}\' /proc/meminfo) kB"'
)


@dataclass
class DemoResult:
    """What one demo run produced; printed by the demo, returned for tests and the doctor."""

    exit_status: int
    stdout: str
    stderr: str
    seconds: float
    boot_phases: str | None = None
    log_tail: str = ""


def find_boot_phases(log_text: str) -> str | None:
    """The last shim log line carrying the boot-phase timings, without logrus decoration."""
    lines = [line for line in log_text.splitlines() if BOOT_PHASES_MARKER in line]
    if not lines:
        return None
    line = lines[-1]
    text = line[line.find(BOOT_PHASES_MARKER):]
    end = text.find('" ')  # the closing quote of logrus' msg="..."
    return (text[:end] if end >= 0 else text.rstrip('"')).replace('\\"', '"')


def run_container(client: CtrClient, runtime: str, timeout: float) -> DemoResult:
    """`ctr run --rm` the demo image once with the given runtime; measures the wall time."""
    container_id = f"bulkhead-demo-{secrets.token_hex(4)}"
    start = time.monotonic()
    res = client.ctr(
        "run", "--runtime", runtime, "--rm", DEMO_IMAGE, container_id, "sh", "-c", DEMO_SCRIPT,
        check=False, timeout=timeout,
    )
    return DemoResult(res.returncode, res.stdout, res.stderr, time.monotonic() - start)
