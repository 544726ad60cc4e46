"""The Prometheus collector: on every scrape, find the live sandboxes, read each one's snapshot
and the host's figures of its shim and QEMU, and turn them into metric families.

Nothing here talks to a shim or an agent, so a scrape costs file reads only and can never
hold up a sandbox; what the shim knows arrives through its metrics.json (at most a few seconds
old, see bulkhead_snapshot_age_seconds).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bulkhead.monitor import discovery, procfs
from bulkhead.monitor.discovery import SandboxDir
from bulkhead.monitor.snapshot import Snapshot, SnapshotError

SANDBOX = ["namespace", "sandbox"]


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=SANDBOX + (labels or []))


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=SANDBOX + (labels or []))


@dataclass
class Families:
    """Every per-sandbox family of one scrape, filled sandbox by sandbox."""

    info: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_sandbox_info", "A live sandbox (value 1): its shim and QEMU pids, how its "
        "VM booted (template: cloned, cold: booted) and, for a cold boot, why",
        ["shim_pid", "vm_pid", "boot", "template_miss"]))
    template_hit: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_template_hit", "1 if the sandbox's VM was cloned from a template, 0 if it "
        "booted cold (a template miss or boot = cold)"))
    boot_phase: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_boot_phase_seconds", "Seconds from the start of the VM's start to each boot "
        "or restore phase; agent_ready is the whole boot (host clock; a cold boot's guest "
        "phases from the guest's clock)",
        ["phase"]))
    containers: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_containers", "Containers in the sandbox (created and not yet deleted)"))
    shim_pss: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_shim_pss_bytes", "Proportional set size of the sandbox's shim, in bytes"))
    vm_pss: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_vm_pss_bytes", "Proportional set size of the sandbox's QEMU process, in bytes "
        "(guest RAM it touched, its share of a template's pages, QEMU itself)"))
    shim_cpu: CounterMetricFamily = field(default_factory=lambda: _counter(
        "bulkhead_shim_cpu_seconds", "CPU time (user + system) of the sandbox's shim, in "
        "seconds"))
    vm_cpu: CounterMetricFamily = field(default_factory=lambda: _counter(
        "bulkhead_vm_cpu_seconds", "CPU time (user + system) of the sandbox's QEMU process, in "
        "seconds: everything the VM ran"))
    vm_start: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_vm_start_time_seconds", "When the sandbox's QEMU process started, in seconds "
        "since the Unix epoch"))
    guest_memory: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_guest_memory_bytes", "The guest's memory by state (total, free, available, "
        "cached) from its /proc/meminfo, in bytes", ["state"]))
    guest_cpu: CounterMetricFamily = field(default_factory=lambda: _counter(
        "bulkhead_guest_cpu_seconds", "The guest's CPU time by mode from its /proc/stat, summed "
        "over its vCPUs, in seconds (a clone's count starts at its template's)", ["mode"]))
    guest_vcpus: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_guest_vcpus", "vCPUs the guest sees"))
    guest_processes: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_guest_processes", "Tasks in the guest kernel, the agent and containers "
        "included"))
    guest_errors: CounterMetricFamily = field(default_factory=lambda: _counter(
        "bulkhead_guest_stats_errors", "Readings of the guest's figures that failed or timed "
        "out (the previous reading is kept)"))
    snapshot_age: GaugeMetricFamily = field(default_factory=lambda: _gauge(
        "bulkhead_snapshot_age_seconds", "Seconds since the shim last wrote the sandbox's "
        "snapshot (written every 5 s; a large age means a stuck shim)"))
    rpc: HistogramMetricFamily = field(default_factory=lambda: HistogramMetricFamily(
        "bulkhead_agent_rpc_duration_seconds", "Latency of the shim's calls to its guest agent "
        "by method, in seconds (WaitProcess and WaitOOM are long polls: their latency is a "
        "process's lifetime)", labels=SANDBOX + ["method"]))
    rpc_errors: CounterMetricFamily = field(default_factory=lambda: _counter(
        "bulkhead_agent_rpc_errors", "Failed calls of the shim to its guest agent by method and "
        "status code (connection: the link to the VM broke)", ["method", "code"]))

    def all(self) -> list[Metric]:
        return list(vars(self).values())


class SandboxCollector(Collector):
    """A prometheus_client collector that reads the host's sandboxes on every scrape."""

    def __init__(self, run_dir: str | None = None) -> None:
        self.run_dir = run_dir

    def collect(self) -> Iterator[Metric]:
        """Yield every family; bulkhead_monitor_scrape_* describe this very scrape."""
        started = time.monotonic()
        dirs = discovery.discover(self.run_dir)
        live = [d for d in dirs if d.shim_alive]
        fams = Families()
        errors = 0
        booted_at = procfs.boot_time()
        now = time.time()
        for sandbox in live:
            errors += add_sandbox(fams, sandbox, booted_at, now)
        count = GaugeMetricFamily("bulkhead_sandboxes", "Live sandboxes (their shim runs)")
        count.add_metric([], len(live))
        stale = GaugeMetricFamily("bulkhead_stale_sandbox_dirs", "Sandbox state directories "
                                  "whose shim is gone (`bulkhead ps` lists them)")
        stale.add_metric([], len(dirs) - len(live))
        failed = GaugeMetricFamily("bulkhead_monitor_scrape_errors", "Figures this scrape "
                                   "could not read (a snapshot or /proc file)")
        failed.add_metric([], errors)
        took = GaugeMetricFamily("bulkhead_monitor_scrape_duration_seconds", "Seconds this "
                                 "scrape took to gather its figures (exposition not included)")
        took.add_metric([], time.monotonic() - started)
        yield count
        yield stale
        yield from fams.all()
        yield failed
        yield took


def add_sandbox(fams: Families, sandbox: SandboxDir, booted_at: float, now: float) -> int:
    """One sandbox's samples into fams; returns how many of its figures could not be read."""
    errors = 0
    labels = [sandbox.namespace, sandbox.sandbox_id]
    try:
        snap = Snapshot.load(sandbox.path)
    except SnapshotError:
        snap, errors = None, errors + 1
    shim_pid = sandbox.state.shim_pid if sandbox.state is not None else 0
    vm_pid = sandbox.vm_pid
    for pid, pss, cpu in ((shim_pid, fams.shim_pss, fams.shim_cpu),
                          (vm_pid, fams.vm_pss, fams.vm_cpu)):
        if not pid:
            continue
        try:
            pss.add_metric(labels, procfs.pss_bytes(pid))
            fields = procfs.stat(pid)
        except procfs.ProcError:
            errors += 1
            continue
        cpu.add_metric(labels, fields.cpu_seconds)
        if pid == vm_pid:
            fams.vm_start.add_metric(labels, procfs.start_time(fields, booted_at))
    boot = snap.boot_mode if snap is not None else ""
    miss = snap.template_miss if snap is not None else ""
    fams.info.add_metric(labels + [str(shim_pid), str(vm_pid or ""), boot, miss], 1)
    if snap is not None:
        add_snapshot(fams, labels, snap, now)
    return errors


def add_snapshot(fams: Families, labels: list[str], snap: Snapshot, now: float) -> None:
    """What the shim wrote: boot, containers, guest figures, agent calls."""
    fams.template_hit.add_metric(labels, 1 if snap.boot_mode == "template" else 0)
    for phase, seconds in snap.phases.items():
        fams.boot_phase.add_metric(labels + [phase], seconds)
    fams.containers.add_metric(labels, len(snap.containers))
    fams.snapshot_age.add_metric(labels, max(0.0, now - snap.written_at))
    fams.guest_errors.add_metric(labels, snap.guest_fetch_errors)
    guest = snap.guest
    if guest is not None:
        for state, value in (("total", guest.memory_total_bytes),
                             ("free", guest.memory_free_bytes),
                             ("available", guest.memory_available_bytes),
                             ("cached", guest.memory_cached_bytes)):
            fams.guest_memory.add_metric(labels + [state], value)
        for mode, seconds in guest.cpu_seconds.items():
            fams.guest_cpu.add_metric(labels + [mode], seconds)
        fams.guest_vcpus.add_metric(labels, guest.vcpus)
        fams.guest_processes.add_metric(labels, guest.processes)
    for method, stats in sorted(snap.rpc.items()):
        bounds = [(_le(b), n) for b, n in zip(snap.rpc_buckets, stats.cumulative(), strict=True)]
        fams.rpc.add_metric(labels + [method], bounds + [("+Inf", stats.count)],
                            stats.sum_seconds)
        for code, n in sorted(stats.errors.items()):
            fams.rpc_errors.add_metric(labels + [method, code], n)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (0.005, 1.0)."""
    return repr(float(bound))
