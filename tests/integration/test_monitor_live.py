"""`bulkhead monitor` and `bulkhead ps` with ten live sandboxes on containerd 1.7: every sandbox
is scraped with its host and guest figures, `ps` lists the same ten, and once they are removed
nothing is left and a scrape shows none. Scrape times are printed, not asserted."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ctrtools import RUNTIME, detached, uid, wait_status
from harness.containerd import PrivateContainerd
from harness.monitor import MonitorProcess
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

pytestmark = [pytest.mark.containerd, pytest.mark.vm]
SANDBOXES = 10
FIGURES_TIMEOUT = 60.0  # seconds until every shim wrote a snapshot with the guest's figures
GONE_TIMEOUT = 15.0  # seconds for the removed sandboxes' shims to finish and exit


def start(ctd: PrivateContainerd, image: str, cid: str) -> None:
    ctd.ctr("run", "--runtime", RUNTIME, "-d", image, cid, "sleep", "600", timeout=120)
    wait_status(ctd, cid, "RUNNING")


def remove(ctd: PrivateContainerd, cid: str) -> None:
    for args in (("tasks", "kill", "-s", "KILL", cid), ("tasks", "rm", "-f", cid),
                 ("containers", "rm", cid)):
        ctd.ctr(*args, check=False, timeout=60)


@pytest.fixture
def sandboxes(containerd: PrivateContainerd, demo_image: str) -> Iterator[list[str]]:
    """Ten lone containers, one sandbox VM each, started four at a time."""
    ids = sorted(uid("mon") for _ in range(SANDBOXES))
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda cid: start(containerd, demo_image, cid), ids))
        yield ids
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda cid: remove(containerd, cid), ids))


def by_sandbox(text: str, namespace: str) -> dict[str, dict[str, list[Sample]]]:
    """sandbox id -> sample name (counters end in _total) -> that sandbox's samples."""
    out: dict[str, dict[str, list[Sample]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("namespace") == namespace:
                out.setdefault(sample.labels["sandbox"], {}).setdefault(
                    sample.name, []).append(sample)
    return out


def total(text: str, name: str) -> float:
    [family] = [f for f in text_string_to_metric_families(text) if f.name == name]
    return family.samples[0].value


def one(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    hits = [s.value for s in samples.get(name, [])
            if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, samples.get(name))
    return hits[0]


def complete(samples: dict[str, list[Sample]]) -> bool:
    """A snapshot written after the guest was read and the container started (snapshots are
    rewritten every 5 s, so the first may predate both)."""
    started = [s for s in samples.get("bulkhead_agent_rpc_duration_seconds_count", [])
               if s.labels["method"] == "StartProcess"]
    return "bulkhead_guest_memory_bytes" in samples and bool(started)


def scrape_until_figures(monitor: MonitorProcess, namespace: str, ids: list[str]) -> str:
    """Scrape until every sandbox's snapshot has all its figures."""
    deadline = time.monotonic() + FIGURES_TIMEOUT
    while True:
        text, _ = monitor.scrape()
        found = by_sandbox(text, namespace)
        if all(complete(found.get(cid, {})) for cid in ids):
            return text
        assert time.monotonic() < deadline, f"no guest figures for some of {ids}:\n{text}"
        time.sleep(0.5)


def bulkhead_ps() -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, "-m", "bulkhead.cli", "ps", "--json"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    rows: list[dict[str, object]] = json.loads(out)
    return rows


@pytest.mark.parametrize("containerd", ["1.7"], indirect=True)
def test_ten_sandboxes_scraped_listed_and_gone(containerd: PrivateContainerd,
                                                demo_image: str, no_leaks: None,
                                                sandboxes: list[str]) -> None:
    ns = containerd.namespace
    with MonitorProcess() as monitor:
        text = scrape_until_figures(monitor, ns, sandboxes)
        found = by_sandbox(text, ns)
        assert sorted(found) == sandboxes  # every one, and none of another test's
        for cid in sandboxes:
            samples = found[cid]
            info = samples["bulkhead_sandbox_info"][0].labels
            assert info["boot"] == "template" and info["template_miss"] == "", info
            assert int(info["vm_pid"]) > 0 and int(info["shim_pid"]) > 0
            assert one(samples, "bulkhead_template_hit") == 1
            assert one(samples, "bulkhead_containers") == 1
            assert one(samples, "bulkhead_shim_pss_bytes") > 1 << 20
            assert one(samples, "bulkhead_vm_pss_bytes") > 1 << 20
            assert one(samples, "bulkhead_vm_cpu_seconds_total") > 0
            assert one(samples, "bulkhead_shim_cpu_seconds_total") > 0
            assert one(samples, "bulkhead_guest_memory_bytes", state="total") > 64 << 20
            assert 0 < one(samples, "bulkhead_guest_memory_bytes", state="available") \
                < one(samples, "bulkhead_guest_memory_bytes", state="total")
            assert one(samples, "bulkhead_guest_cpu_seconds_total", mode="idle") > 0
            assert one(samples, "bulkhead_boot_phase_seconds", phase="state_loaded") > 0
            assert one(samples, "bulkhead_boot_phase_seconds", phase="agent_ready") > 0
            for method in ("Check", "SetupSandbox", "CreateContainer", "StartProcess",
                           "GuestStats"):
                assert one(samples, "bulkhead_agent_rpc_duration_seconds_count",
                           method=method) >= 1, method
            assert "bulkhead_agent_rpc_errors_total" not in samples  # no call failed
        assert total(text, "bulkhead_monitor_scrape_errors") == 0

        times = [monitor.scrape()[1] for _ in range(10)]
        gather = total(monitor.scrape()[0], "bulkhead_monitor_scrape_duration_seconds")
        print(f"\nscrape of {len(found)} sandboxes over HTTP: median "
              f"{statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms (collector alone: {gather * 1000:.1f} ms)")

        rows = [r for r in bulkhead_ps() if r["namespace"] == ns]
        assert sorted(str(r["sandbox"]) for r in rows) == sandboxes
        for row in rows:
            assert (row["status"], row["boot"], row["containers"]) == (
                "running", "template", [row["sandbox"]]), row
            assert int(str(row["memory_bytes"])) > 2 << 20 and int(str(row["vm_pid"])) > 0

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda cid: remove(containerd, cid), sandboxes))
        deadline = time.monotonic() + GONE_TIMEOUT
        while by_sandbox(text := monitor.scrape()[0], ns):  # shims exit after their cleanup
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        others = {s.labels["sandbox"] for f in text_string_to_metric_families(text)
                  if f.name == "bulkhead_sandbox_info" for s in f.samples}
        assert total(text, "bulkhead_sandboxes") == len(others) == 0, others
    assert [r for r in bulkhead_ps() if r["namespace"] == ns] == []


@pytest.mark.parametrize("containerd", ["1.7"], indirect=True)
def test_cold_boot_is_a_miss_with_its_reason(containerd: PrivateContainerd, demo_image: str,
                                             no_leaks: None, tmp_path: Path) -> None:
    config = tmp_path / "cold.toml"
    config.write_text('boot = "cold"\n')
    with detached(containerd, demo_image, "sleep", "600", prefix="cold",
                  opts=("--runtime-config-path", str(config))) as cid:
        deadline = time.monotonic() + FIGURES_TIMEOUT
        while True:  # `monitor --once`: one scrape on stdout, no server
            text = subprocess.run([sys.executable, "-m", "bulkhead.cli", "monitor", "--once"],
                                  check=True, capture_output=True, text=True, timeout=30).stdout
            samples = by_sandbox(text, containerd.namespace).get(cid, {})
            if complete(samples):
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
    info = samples["bulkhead_sandbox_info"][0].labels
    assert info["boot"] == "cold" and info["template_miss"] == \
        "the configuration says boot = 'cold'", info
    assert one(samples, "bulkhead_template_hit") == 0
    # A cold boot has the guest's own phases, in order.
    phases = {s.labels["phase"]: s.value for s in samples["bulkhead_boot_phase_seconds"]}
    assert 0 < phases["kernel_start"] < phases["agent_start"] < phases["agent_ready"], phases
    assert "state_loaded" not in phases
