"""Shared frame of the benchmarks: one private containerd, runc and Bulkhead measured in one run."""

from __future__ import annotations

import secrets
import statistics
from collections.abc import Callable

from bulkhead.devenv.containerd import PrivateContainerd
from bulkhead.devenv.demo import DEMO_IMAGE_TAR

RUNTIMES = {"runc": "io.containerd.runc.v2", "bulkhead": "io.containerd.bulkhead.v2"}
Measure = Callable[[PrivateContainerd, str, int], list[float]]


def compare(title: str, measure: Measure, n: int, version: str,
            after: Callable[[PrivateContainerd], None] | None = None) -> None:
    """Print median/min/max per runtime and the Bulkhead/runc ratio of the medians."""
    ctd = PrivateContainerd(name=f"bench-{secrets.token_hex(3)}", version=version)
    with ctd:
        ctd.import_image(DEMO_IMAGE_TAR)
        print(f"{title}, containerd {version}, n={n} each")
        medians = {}
        for name, runtime in RUNTIMES.items():
            times = measure(ctd, runtime, n)
            medians[name] = statistics.median(times)
            print(f"  {name:9s} median {medians[name]:.3f} s  "
                  f"min {min(times):.3f}  max {max(times):.3f}")
        print(f"  ratio bulkhead/runc: {medians['bulkhead'] / medians['runc']:.2f}x")
        if after is not None:
            after(ctd)
