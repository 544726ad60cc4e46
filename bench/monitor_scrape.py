#!/usr/bin/env python3
"""Scrape time of `bulkhead monitor` with N live sandboxes (lone `ctr run -d` containers).

Starts N sandboxes on a private containerd, waits until each shim wrote a snapshot with its
guest's figures, then times `--scrapes` HTTP scrapes of /metrics and prints median/min/max, the
collector's own share and the size of a scrape. Prints figures only; asserts nothing. Usage (as
root, after `make install`):
    /opt/bulkhead/venv/bin/python bench/monitor_scrape.py [-n 10] [--scrapes 20]
        [--containerd-version 1.7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo.container import DEMO_IMAGE
from harness.containerd import PrivateContainerd
from harness.monitor import MonitorProcess
from prometheus_client.parser import text_string_to_metric_families
from runtime_comparison import RUNTIMES, bench_containerd, new_container_id, remove_container

READY_TIMEOUT = 120.0  # seconds for every snapshot to carry the guest's figures


def start(ctd: PrivateContainerd, cid: str) -> None:
    """One detached sandbox running `sleep 600`."""
    ctd.ctr("run", *RUNTIMES["bulkhead"].run_args(ctd), "-d", DEMO_IMAGE, cid, "sleep", "600",
            timeout=180)


def guest_figures(text: str) -> set[str]:
    """Sandboxes whose scrape has the guest's memory (their shim read the guest once)."""
    return {s.labels["sandbox"] for f in text_string_to_metric_families(text)
            if f.name == "bulkhead_guest_memory_bytes" for s in f.samples}


def wait_ready(monitor: MonitorProcess, ids: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not set(ids) <= guest_figures(monitor.scrape()[0]):
        if time.monotonic() > deadline:
            raise SystemExit(f"not every sandbox had guest figures after {READY_TIMEOUT:g} s")
        time.sleep(0.5)


def measure(monitor: MonitorProcess, scrapes: int) -> None:
    """Time the scrapes and print the figures."""
    times, gathers = [], []
    text = ""
    for _ in range(scrapes):
        text, took = monitor.scrape()
        times.append(took)
        for family in text_string_to_metric_families(text):
            if family.name == "bulkhead_monitor_scrape_duration_seconds":
                gathers.append(family.samples[0].value)
    series = sum(len(f.samples) for f in text_string_to_metric_families(text))
    ms = [t * 1000 for t in times]
    print(f"scrape over HTTP, {scrapes} scrapes: median {statistics.median(ms):.1f} ms, "
          f"min {min(ms):.1f} ms, max {max(ms):.1f} ms")
    print(f"  collector alone (bulkhead_monitor_scrape_duration_seconds): median "
          f"{statistics.median(gathers) * 1000:.1f} ms")
    print(f"  one scrape: {len(text) / 1024:.0f} KiB, {series} samples")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="live sandboxes")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--containerd-version", default="1.7")
    args = parser.parse_args()
    with bench_containerd(args.containerd_version) as ctd:
        ids = [new_container_id() for _ in range(args.n)]
        try:
            started = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda cid: start(ctd, cid), ids))
            print(f"{args.n} sandboxes started in {time.monotonic() - started:.1f} s "
                  f"(containerd {args.containerd_version})")
            with MonitorProcess() as monitor:
                wait_ready(monitor, ids)
                measure(monitor, args.scrapes)
        finally:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda cid: remove_container(ctd, cid), ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
