#!/usr/bin/env python3
"""Exec latency of `ctr task exec ... true` into a running container: Bulkhead vs runc, one run.

Prints figures only; asserts nothing. Usage (as root, after `make install`):
    /opt/bulkhead/venv/bin/python bench/exec_latency.py [-n 20] [--containerd-version 1.7]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo.container import DEMO_IMAGE
from harness.containerd import PrivateContainerd
from runtime_comparison import Runtime, add_runtimes_option, compare, selected


def time_execs(ctd: PrivateContainerd, cid: str, n: int) -> list[float]:
    """Wall times of n sequential attached `ctr task exec <cid> true`."""
    times = []
    for i in range(n):
        start = time.monotonic()
        ctd.ctr("tasks", "exec", "--exec-id", f"bench-{i}", cid, "true", timeout=60)
        times.append(time.monotonic() - start)
    return times


def measure(ctd: PrivateContainerd, runtime: Runtime, n: int) -> list[float]:
    """Start one sleeping container with the runtime, exec into it n times, remove it."""
    cid = f"bench-{secrets.token_hex(4)}"
    ctd.ctr("run", *runtime.run_args(ctd), "-d", DEMO_IMAGE, cid, "sleep", "3600", timeout=120)
    try:
        time_execs(ctd, cid, 1)  # warm-up (first exec pays for page-cache misses)
        return time_execs(ctd, cid, n)
    finally:
        ctd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
        ctd.ctr("tasks", "rm", "-f", cid, check=False)
        ctd.ctr("containers", "rm", cid, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="execs per runtime")
    parser.add_argument("--containerd-version", default="1.7")
    add_runtimes_option(parser, "runc,bulkhead")
    args = parser.parse_args()
    compare("ctr task exec <container> true", measure, args.n, args.containerd_version,
            selected(args.runtimes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
