#!/usr/bin/env python3
"""Start latency of `ctr run --rm IMAGE true`: Bulkhead vs runc in one run, plus boot phases.

Prints figures only; asserts nothing. Usage (as root, after `make install`):
    /opt/bulkhead/venv/bin/python bench/start_latency.py [-n 10] [--containerd-version 1.6]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo.container import DEMO_IMAGE, find_boot_phases
from harness.containerd import PrivateContainerd
from runtime_comparison import Runtime, add_runtimes_option, compare, selected


def time_runs(ctd: PrivateContainerd, runtime: Runtime, n: int) -> list[float]:
    """Wall times of n sequential `ctr run --rm IMAGE true`, after one warm-up run."""
    times = []
    for _ in range(n + 1):
        start = time.monotonic()
        ctd.ctr("run", *runtime.run_args(ctd), "--rm", DEMO_IMAGE,
                f"bench-{secrets.token_hex(4)}", "true", timeout=120)
        times.append(time.monotonic() - start)
    return times[1:]  # the first run warms caches (image unpack, page cache)


def print_phases(ctd: PrivateContainerd) -> None:
    """The boot phases of the last restored and of the last cold-booted run."""
    lines = ctd.log_text().splitlines()
    for mode, mark in (("cloned from the template", "state_loaded="),
                       ("booted cold", "kernel_start=")):
        phases = find_boot_phases("\n".join(ln for ln in lines if mark in ln))
        if phases:
            print(f"boot phases of the last run {mode} (seconds since QEMU start):\n  {phases}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="runs per runtime")
    parser.add_argument("--containerd-version", default="1.7")
    add_runtimes_option(parser, "runc,bulkhead,bulkhead-cold")
    args = parser.parse_args()
    compare(f"ctr run --rm {DEMO_IMAGE} true", time_runs, args.n, args.containerd_version,
            selected(args.runtimes), after=print_phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
