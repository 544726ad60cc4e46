"""`bulkhead monitor` as a child process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import re
import select
import subprocess
import sys
import time
import urllib.request
from types import TracebackType

from harness.procs import terminate

START_TIMEOUT = 20.0  # seconds for the monitor to print its address


class MonitorProcess:
    """Started on entry (port 0: the kernel picks one), terminated on exit."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> MonitorProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bulkhead.cli", "monitor", "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], START_TIMEOUT)
        line = self.proc.stderr.readline() if ready else ""  # "...serving http://H:P/metrics"
        found = re.search(r"serving (http://\S+)", line)
        if found is None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"bulkhead monitor did not start: {line.strip()!r}")
        self.url = found.group(1)
        return self

    def scrape(self, timeout: float = 10.0) -> tuple[str, float]:
        """One GET of /metrics: the text and the wall time it took in seconds."""
        start = time.monotonic()
        with urllib.request.urlopen(self.url, timeout=timeout) as reply:
            text = reply.read().decode()
        return text, time.monotonic() - start

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is None:
            return
        terminate(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
