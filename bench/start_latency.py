#!/usr/bin/env python3
"""Start latency of `ctr run --rm IMAGE true`: Bulkhead vs runc in one run, plus boot phases.

Prints figures only; asserts nothing. Usage (as root, after `make install`):
    /opt/bulkhead/venv/bin/python bench/start_latency.py [-n 10] [--containerd-version 1.6]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time

from bulkhead.devenv.containerd import PrivateContainerd
from bulkhead.devenv.demo import DEMO_IMAGE, DEMO_IMAGE_TAR, find_boot_phases

RUNTIMES = {"runc": "io.containerd.runc.v2", "bulkhead": "io.containerd.bulkhead.v2"}


def time_runs(ctd: PrivateContainerd, runtime: str, n: int) -> list[float]:
    """Wall times of n sequential `ctr run --rm IMAGE true`."""
    times = []
    for _ in range(n):
        start = time.monotonic()
        ctd.ctr("run", "--runtime", runtime, "--rm", DEMO_IMAGE,
                f"bench-{secrets.token_hex(4)}", "true", timeout=120)
        times.append(time.monotonic() - start)
    return times


def main() -> int:
    """Run both runtimes against one private containerd and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="runs per runtime")
    parser.add_argument("--containerd-version", default="1.6")
    args = parser.parse_args()
    ctd = PrivateContainerd(name=f"bench-{secrets.token_hex(3)}", version=args.containerd_version)
    with ctd:
        ctd.import_image(DEMO_IMAGE_TAR)
        for runtime in RUNTIMES.values():  # warm caches (image unpack, page cache) once each
            time_runs(ctd, runtime, 1)
        medians = {}
        print(f"ctr run --rm {DEMO_IMAGE} true, containerd {args.containerd_version}, "
              f"n={args.n} each")
        for name, runtime in RUNTIMES.items():
            times = time_runs(ctd, runtime, args.n)
            medians[name] = statistics.median(times)
            print(f"  {name:9s} median {medians[name]:.3f} s  "
                  f"min {min(times):.3f}  max {max(times):.3f}")
        print(f"  ratio bulkhead/runc: {medians['bulkhead'] / medians['runc']:.1f}x")
        phases = find_boot_phases(ctd.log_text())
        print(f"boot phases of the last Bulkhead run (seconds since QEMU start):\n  "
              f"{phases or 'not found in the containerd log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
