#!/usr/bin/env python3
"""K parallel `ctr run --rm IMAGE echo hi`: time until the last finishes, Bulkhead vs runc.

All K are launched at once; per runtime it prints the time until the last one finished and the
median/min/max of the individual completion times (medians over --repeat rounds). Prints figures
only; asserts nothing. Usage (as root, after `make install`):
    /opt/bulkhead/venv/bin/python bench/parallel_start.py [-k 5] [--repeat 1]
        [--containerd-version 1.7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo.container import DEMO_IMAGE
from harness.containerd import PrivateContainerd
from runtime_comparison import (
    Runtime,
    add_runtimes_option,
    bench_containerd,
    new_container_id,
    ratio,
    remove_container,
    selected,
)

RUN_TIMEOUT = 180.0  # per ctr run; K cold TCG boots share 2 cores


@dataclass
class Round:
    """One round of K parallel runs: completion times since the common launch."""

    times: list[float]
    failures: list[str]

    @property
    def all_done(self) -> float:
        return max(self.times)


def finish(proc: subprocess.Popen[str], start: float) -> tuple[float, str]:
    """Wait for one ctr run; its completion time since launch and '' or why it failed."""
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return time.monotonic() - start, f"timed out after {RUN_TIMEOUT:g} s"
    elapsed = time.monotonic() - start
    if proc.returncode != 0 or out.strip() != "hi":
        return elapsed, f"exit {proc.returncode}, stdout {out.strip()!r}, stderr {err.strip()!r}"
    return elapsed, ""


def run_round(ctd: PrivateContainerd, runtime: Runtime, k: int) -> Round:
    """Launch k `ctr run --rm` at once (Popen back to back), wait for all in threads."""
    cids = [new_container_id() for _ in range(k)]
    argvs = [ctd.ctr_argv("run", *runtime.run_args(ctd), "--rm", DEMO_IMAGE, cid, "echo", "hi")
             for cid in cids]
    start = time.monotonic()
    running = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")
               for argv in argvs]
    with ThreadPoolExecutor(max_workers=k) as pool:
        results = list(pool.map(lambda p: finish(p, start), running))
    failures = [f"{cid}: {why}" for cid, (_, why) in zip(cids, results, strict=True) if why]
    for cid, (_, why) in zip(cids, results, strict=True):
        if why:
            remove_container(ctd, cid)  # --rm only removes what finished normally
    return Round([t for t, _ in results], failures)


def wait_quiet(ctd: PrivateContainerd, timeout: float = 30.0) -> None:
    """Let the previous round's shims (and VMs) exit so they do not eat the next round's CPU."""
    deadline = time.monotonic() + timeout
    while ctd.shim_processes() and time.monotonic() < deadline:
        time.sleep(0.2)


def warm_up(ctd: PrivateContainerd, runtime: Runtime) -> float:
    """One run alone first: unpacks the image and fills the page cache; returns its time."""
    start = time.monotonic()
    ctd.ctr("run", *runtime.run_args(ctd), "--rm", DEMO_IMAGE, new_container_id(), "echo", "hi",
            timeout=RUN_TIMEOUT)
    return time.monotonic() - start


def run_runtime(ctd: PrivateContainerd, runtime: Runtime, k: int, repeat: int
                ) -> list[Round]:
    """A warm-up run, then `repeat` rounds of k parallel runs, each after the last has exited."""
    name = runtime.name
    print(f"  ({name}: one run alone as warm-up {warm_up(ctd, runtime):.3f} s, not counted)")
    rounds = []
    for _ in range(repeat):
        wait_quiet(ctd)
        rounds.append(run_round(ctd, runtime, k))
    wait_quiet(ctd)
    return rounds


def summary(rounds: list[Round]) -> dict[str, float]:
    """Medians over rounds of: all done, and the median/min/max individual completion time."""
    figures = {"all done": [r.all_done for r in rounds],
               "median": [statistics.median(r.times) for r in rounds],
               "min": [min(r.times) for r in rounds],
               "max": [max(r.times) for r in rounds]}
    return {name: statistics.median(values) for name, values in figures.items()}


def print_runtime(name: str, rounds: list[Round]) -> dict[str, float]:
    """One line of figures per runtime, plus any failed runs; returns the figures."""
    fig = summary(rounds)
    failures = [f for r in rounds for f in r.failures]
    print(f"  {name:9s} all done {fig['all done']:.3f} s   each: median {fig['median']:.3f}  "
          f"min {fig['min']:.3f}  max {fig['max']:.3f}   failed {len(failures)}")
    for failure in failures[:5]:
        print(f"    failed: {failure[:300]}")
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", type=int, default=5, help="containers started at once")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per runtime (medians)")
    parser.add_argument("--containerd-version", default="1.7")
    add_runtimes_option(parser, "runc,bulkhead")
    args = parser.parse_args()
    runtimes = selected(args.runtimes)
    with bench_containerd(args.containerd_version) as ctd:
        print(f"{args.k} parallel `ctr run --rm {DEMO_IMAGE} echo hi`, containerd "
              f"{args.containerd_version}, {args.repeat} round(s) each (medians over rounds)")
        rounds = {name: run_runtime(ctd, rt, args.k, args.repeat) for name, rt in runtimes.items()}
        figures = {name: print_runtime(name, r) for name, r in rounds.items()}
    for key in ("all done", "median"):
        print(f"  ratios, {key}: {ratio({n: f[key] for n, f in figures.items()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
