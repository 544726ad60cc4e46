#!/usr/bin/env python3
"""Kubernetes-style pods through containerd's CRI: Bulkhead vs runc in one run.

Drives containerd 1.7's CRI plugin (the calls kubelet makes) on a private, CRI-enabled
containerd with its own CNI bridge, for the "runc" and "bulkhead" handlers, and prints:
  1. start: RunPodSandbox + CreateContainer + StartContainer until the container's first output
     line (`echo ready; sleep 600`) is in its CRI log file; median of N runs per handler,
     run alternately (runc, bulkhead, runc, ...) so drifting host load hits both alike
  2. parallel: K pods started at once (threads), each timed from its RunPodSandbox to its
     first output line; median and max per handler
  3. memory: PSS per idle pod with M idle pods per handler; Bulkhead = shim daemon + QEMU,
     runc = shim + pause + container processes (see pod_memory.py)
  4. http: requests/s from the host to a pod's busybox httpd at the pod IP on the private
     bridge, one request per connection, for D seconds at each concurrency (see pod_http.py)
Ratios are bulkhead/runc. Prints figures only; asserts nothing. Pods, containerd and logs are
removed at the end, also on errors, Ctrl-C and SIGTERM. The CRI client is the test suite's
(tests/cri), imported from the repository by cri_bench.py.

Usage (as root, with Bulkhead installed, i.e. after `make install`):
    /opt/bulkhead/venv/bin/python bench/pods.py [-n 5] [-k 5] [--idle 10] [--duration 5]
        [--concurrency 1,4] [--parts start,parallel,memory,http] [--containerd-version 1.7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pod_http
import pod_memory
from cri_bench import (
    HANDLERS,
    READY_COMMAND,
    Cancelled,
    CriBench,
    Pod,
    cri_bench,
    time_to_first_line,
    unique_name,
    wait_first_line,
)
from runtime_comparison import add_parts_option
from runtime_comparison import ratio as ratio_of

PARTS = ("start", "parallel", "memory", "http")
HTTP_PORT = 8080
HTTP_BODY = b"hello\n"
HTTPD = ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && "
         f"exec httpd -f -p {HTTP_PORT} -h /www"]
HTTPD_TIMEOUT = 120.0


def ratio(values: dict[str, float]) -> str:
    """bulkhead/runc as every benchmark prints it, or n/a when a handler has no figure."""
    missing = [h for h in HANDLERS if not values.get(h)]
    return f"n/a (no figure for {', '.join(missing)})" if missing else ratio_of(values)


def seconds(values: list[float]) -> str:
    return (f"median {statistics.median(values):.3f} s  min {min(values):.3f}  "
            f"max {max(values):.3f}") if values else "no successful run"


# --- 1. one pod --------------------------------------------------------------------------------


def one_pod(bench: CriBench, handler: str) -> float:
    """Time one pod to its first output line, then remove it and let its shim exit."""
    pod, elapsed = time_to_first_line(bench, handler, unique_name(f"start-{handler}"))
    bench.remove_pod(pod)
    bench.wait_quiet()
    return elapsed


def part_start(bench: CriBench, n: int) -> None:
    print(f"\n1. one pod: RunPodSandbox + CreateContainer + StartContainer until the first "
          f"output line is in the CRI log (n={n} per handler, alternating; lower is better)")
    for handler in HANDLERS:
        print(f"  ({handler}: warm-up {one_pod(bench, handler):.3f} s, not counted)", flush=True)
    times: dict[str, list[float]] = {h: [] for h in HANDLERS}
    for _ in range(n):
        for handler in HANDLERS:
            times[handler].append(one_pod(bench, handler))
    for handler in HANDLERS:
        print(f"  {handler:9s} {seconds(times[handler])}   "
              f"runs: {' '.join(f'{t:.3f}' for t in times[handler])}")
    print(f"  ratio of medians: {ratio({h: statistics.median(t) for h, t in times.items()})}",
          flush=True)


# --- 2. K pods in parallel ---------------------------------------------------------------------


@dataclass
class ParallelRound:
    """Each pod's time from its own RunPodSandbox to its first output line, and failures."""

    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)


def parallel_round(bench: CriBench, handler: str, k: int) -> ParallelRound:
    """k threads released together by a barrier, each starting one pod; all joined, even when
    interrupted, before the pods are removed."""
    result = ParallelRound()
    lock = threading.Lock()
    barrier = threading.Barrier(k)

    def one(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            start = time.monotonic()
            pod = bench.run_pod(unique_name(f"par{index}-{handler}"), handler)
            with lock:
                result.pods.append(pod)
            bench.start_container(pod, READY_COMMAND)
            elapsed = wait_first_line(bench, pod, start)
            with lock:
                result.times.append(elapsed)
        except Exception as exc:  # noqa: BLE001 - recorded and printed with the figures
            with lock:
                result.failures.append(f"pod {index}: {exc!r}"[:300])

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(k)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        if any(t.is_alive() for t in threads):  # interrupted: make the others give up
            bench.cancel.set()
            barrier.abort()
            for thread in threads:
                thread.join()
        for pod in result.pods:
            bench.remove_pod(pod)
    bench.wait_quiet()
    return result


def part_parallel(bench: CriBench, k: int) -> None:
    print(f"\n2. {k} pods started in parallel (threads), each from its RunPodSandbox to its "
          f"first output line (lower is better)")
    figures: dict[str, dict[str, float]] = {}
    for handler in HANDLERS:
        started = time.monotonic()
        res = parallel_round(bench, handler, k)
        took = time.monotonic() - started
        print(f"  {handler:9s} {seconds(res.times)}   ({len(res.times)}/{k} ok; round incl. "
              f"removal {took:.1f} s)", flush=True)
        for failure in res.failures[:5]:
            print(f"    failed: {failure}")
        if res.times:
            figures[handler] = {"median": statistics.median(res.times), "max": max(res.times)}
    for key in ("median", "max"):
        print(f"  ratio, {key}: {ratio({h: f[key] for h, f in figures.items()})}")


# --- 3. memory of idle pods --------------------------------------------------------------------


CPU_WINDOW = 20.0  # seconds over which idle CPU is sampled


def idle_pods(bench: CriBench, handler: str, m: int, settle: float
              ) -> tuple[list[pod_memory.PodMemory], list[float]]:
    """Start m idle pods one after another (each until its first line), wait settle seconds,
    measure their PSS, then their CPU over CPU_WINDOW (millicores each), remove them."""
    pods: list[Pod] = []
    try:
        for i in range(m):
            pod, _ = time_to_first_line(bench, handler, unique_name(f"idle{i}-{handler}"))
            pods.append(pod)
        if bench.cancel.wait(settle):
            raise Cancelled("settling")
        memory = pod_memory.measure_pods(bench.instance, handler, [p.id for p in pods])
        before = [pod_memory.cpu_seconds(m.pids) for m in memory]
        if bench.cancel.wait(CPU_WINDOW):
            raise Cancelled("sampling CPU")
        after = [pod_memory.cpu_seconds(m.pids) for m in memory]
        return memory, [(b - a) / CPU_WINDOW * 1000 for a, b in zip(before, after, strict=True)]
    finally:
        for pod in pods:
            bench.remove_pod(pod)
        bench.wait_quiet()


def mib(kib: float) -> str:
    return f"{kib / 1024:6.1f} MiB"


def part_memory(bench: CriBench, m: int, settle: float) -> None:
    print(f"\n3. host memory per idle pod (PSS from smaps_rollup), {m} idle pods per handler "
          f"(`echo ready; sleep 600`), measured {settle:g} s after the last one's first line")
    totals: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for handler in HANDLERS:
        pods, millicores = idle_pods(bench, handler, m, settle)
        cpu[handler] = statistics.fmean(millicores)
        parts = list(pods[0].parts)
        means = {part: statistics.fmean(p.parts[part] for p in pods) for part in parts}
        counts = {part: statistics.fmean(p.counts[part] for p in pods) for part in parts}
        totals[handler] = statistics.fmean(p.total for p in pods)
        split = "  + ".join(f"{part} {mib(kib)} ({counts[part]:.0f} proc)"
                            for part, kib in means.items())
        print(f"  {handler:9s} {split}  = {mib(totals[handler])} per pod "
              f"(min {mib(min(p.total for p in pods))}, max {mib(max(p.total for p in pods))})",
              flush=True)
        print(f"  {'':9s} idle CPU over {CPU_WINDOW:g} s: {cpu[handler]:.1f} millicores per pod "
              f"(max {max(millicores):.1f})", flush=True)
    print(f"  ratio per pod: memory {ratio(totals)}, idle CPU {ratio(cpu)}")


# --- 4. HTTP -----------------------------------------------------------------------------------


def http_runs(bench: CriBench, handler: str, levels: list[int], duration: float
              ) -> dict[int, pod_http.LoadResult]:
    """One pod running busybox httpd; once it answers from the host, a load run per level."""
    pod = bench.run_pod(unique_name(f"http-{handler}"), handler)
    try:
        bench.start_container(pod, HTTPD)
        ip = bench.pod_ip(pod)
        pod_http.wait_serving(ip, HTTP_PORT, HTTP_BODY, HTTPD_TIMEOUT, bench.cancel)
        results = {}
        for level in levels:
            results[level] = pod_http.run_load(ip, HTTP_PORT, HTTP_BODY, duration, level,
                                               bench.cancel)
            res = results[level]
            print(f"  {handler:9s} c={level}  {res.rate:7.1f} req/s  median latency "
                  f"{res.median_latency * 1000:6.2f} ms  ({res.ok} ok, {res.errors} errors "
                  f"in {res.duration:.1f} s; pod {ip})", flush=True)
            if res.first_error:
                print(f"    first error: {res.first_error[:200]}")
        return results
    finally:
        bench.remove_pod(pod)
        bench.wait_quiet()


def part_http(bench: CriBench, levels: list[int], duration: float) -> None:
    print(f"\n4. HTTP GET / from the host to the pod IP on the private bridge, busybox httpd, "
          f"one request per connection, {duration:g} s per concurrency level "
          f"(higher is better)")
    results = {handler: http_runs(bench, handler, levels, duration) for handler in HANDLERS}
    for level in levels:
        print(f"  ratio c={level}: {ratio({h: r[level].rate for h, r in results.items()})}")


# --- main --------------------------------------------------------------------------------------


def positive_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"want positive integers, comma-separated: {text!r}")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="single-pod runs per handler (1.)")
    parser.add_argument("-k", type=int, default=5, help="pods started in parallel (2.)")
    parser.add_argument("--idle", type=int, default=10, help="idle pods per handler (3.)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds idle before measuring memory (3.)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of load per concurrency level (4.)")
    parser.add_argument("--concurrency", type=positive_ints, default=[1, 4],
                        help="HTTP concurrency levels, comma-separated (4.; default 1,4)")
    add_parts_option(parser, PARTS)
    parser.add_argument("--containerd-version", default="1.7")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: it starts a private containerd with a CNI bridge")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"pods through CRI, containerd {args.containerd_version}, handlers "
          f"{' vs '.join(HANDLERS)}; host: {os.cpu_count()} CPUs, load average {load} at start")
    try:
        with cri_bench(args.containerd_version) as bench:
            runs: dict[str, Callable[[], None]] = {
                "start": lambda: part_start(bench, args.n),
                "parallel": lambda: part_parallel(bench, args.k),
                "memory": lambda: part_memory(bench, args.idle, args.settle),
                "http": lambda: part_http(bench, args.concurrency, args.duration)}
            failed = [part for part in args.parts if not run_part(part, runs[part])]
    except KeyboardInterrupt as exc:
        print(f"interrupted ({str(exc) or 'SIGINT'}); cleanup ran (problems, if any, are above)")
        return 130
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def run_part(name: str, run: Callable[[], None]) -> bool:
    """Run one figure; a failure is printed and the next figure still runs (its pods were
    removed by the part's own cleanup). Interrupts are not caught."""
    try:
        run()
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - reported; the other figures are still worth having
        print(f"  {name} failed: {exc!r}"[:600], flush=True)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
