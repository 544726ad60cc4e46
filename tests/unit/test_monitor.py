"""`bulkhead monitor` and `bulkhead ps` without VMs: the snapshot file, latency counting, /proc
parsing (host and guest side), discovery of state directories, and the exposition as Prometheus
parses it. Shims are stood in for by real processes whose command line names a sandbox."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkhead.agent.rpc_stats import BUCKETS, MethodStats, RpcStats
from bulkhead.cli import main as cli_main
from bulkhead.debug import ps
from bulkhead.monitor import discovery, procfs, server
from bulkhead.monitor.snapshot import METRICS_FILE, GuestFigures, Snapshot, SnapshotError
from bulkhead.sandbox.state import SandboxState
from bulkhead_agent import guest_stats
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def snapshot(sandbox_id: str = "sb1", namespace: str = "ns", shim_pid: int = 1) -> Snapshot:
    stats = RpcStats()
    stats.observe("CreateContainer", 0.004)
    stats.observe("CreateContainer", 0.3)
    stats.observe("Check", 20.0)  # past the last bucket: only +Inf counts it
    stats.observe("SignalProcess", 0.002, "not_found")
    return Snapshot(
        sandbox_id=sandbox_id, namespace=namespace, shim_pid=shim_pid, vm_pid=0,
        boot_mode="template", template_miss="", phases={"accel_chosen": 0.0, "agent_ready": 0.2},
        containers=["c1", "c2"], written_at=time.time(),
        guest=GuestFigures(memory_total_bytes=512 << 20, memory_free_bytes=400 << 20,
                           memory_available_bytes=450 << 20, memory_cached_bytes=30 << 20,
                           cpu_seconds={"user": 1.5, "idle": 10.0}, vcpus=1,
                           uptime_seconds=12.0, processes=9, fetched_at=time.time()),
        guest_fetch_errors=2, rpc=stats.methods)


# -- snapshot ---------------------------------------------------------------------------


def test_snapshot_round_trips_and_is_written_whole(tmp_path: Path) -> None:
    snap = snapshot()
    snap.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [METRICS_FILE]  # the temporary file was renamed
    assert Snapshot.load(str(tmp_path)) == snap
    snap.guest = None
    snap.save(str(tmp_path))
    assert Snapshot.load(str(tmp_path)) == snap


def test_missing_snapshot_is_none_and_bad_ones_are_named(tmp_path: Path) -> None:
    assert Snapshot.load(str(tmp_path)) is None
    path = tmp_path / METRICS_FILE
    for text in ("{not json", json.dumps({"format": 99}), json.dumps({"format": 1})):
        path.write_text(text)
        with pytest.raises(SnapshotError, match=METRICS_FILE):
            Snapshot.load(str(tmp_path))


def test_latency_buckets_are_cumulative_with_errors_by_code() -> None:
    stats = MethodStats()
    for seconds in (0.0005, 0.001, 0.002, 7.0, 11.0):
        stats.observe(seconds, "")
    stats.observe(0.01, "deadline_exceeded")
    cumulative = stats.cumulative()
    assert cumulative[0] == 2  # 0.0005 and 0.001 (le is inclusive)
    assert cumulative[BUCKETS.index(0.0025)] == 3
    assert cumulative[BUCKETS.index(0.01)] == 4
    assert cumulative[-1] == 5 and stats.count == 6  # 11 s is only in +Inf
    assert stats.errors == {"deadline_exceeded": 1}
    assert stats.sum_seconds == pytest.approx(18.0135)


# -- /proc parsing ----------------------------------------------------------------------


def test_stat_parsing_survives_odd_command_names() -> None:
    fields = " ".join(str(n) for n in range(3, 53))  # field k holds the number k
    parsed = procfs.parse_stat(f"1234 (a (weird) name) ) S {fields[2:]}")
    assert parsed.cpu_seconds == (14 + 15) / procfs.TICKS
    assert parsed.start_ticks == 22
    with pytest.raises(ValueError):
        procfs.parse_stat("1234 (short) S 1 2 3")


def test_own_process_figures_are_real() -> None:
    pid = os.getpid()
    assert procfs.pss_bytes(pid) > 1 << 20
    fields = procfs.stat(pid)
    assert fields.cpu_seconds > 0
    started = procfs.start_time(fields, procfs.boot_time())
    assert time.time() - 3600 < started <= time.time() + 1
    with pytest.raises(procfs.ProcError, match="/proc/999999999/smaps_rollup"):
        procfs.pss_bytes(999_999_999)


def test_guest_side_parsers_read_this_kernel() -> None:
    reading = guest_stats.collect("/proc")
    with open("/proc/meminfo") as f:
        total_kib = int(f.readline().split()[1])
    assert reading.memory_total_bytes == total_kib * 1024
    assert 0 < reading.memory_available_bytes <= reading.memory_total_bytes
    assert set(reading.cpu_seconds) == set(guest_stats.CPU_MODES)
    assert reading.cpu_seconds["idle"] > 0 and reading.processes > 1 and reading.vcpus >= 1
    assert guest_stats.parse_meminfo("MemTotal: 10 kB\nHugePages_Total: 3\nBad: x\n") == {
        "MemTotal": 10240, "HugePages_Total": 3}
    assert guest_stats.parse_task_count("0.00 0.01 0.05 2/73 1234\n") == 73
    with pytest.raises(ValueError):
        guest_stats.parse_cpu_seconds("intr 1 2 3\n", 100)


# -- discovery, exposition, ps ----------------------------------------------------------


@pytest.fixture
def fake_shim() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line is a resident shim's for sandbox `live1`."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "-m", "bulkhead.shim.daemon", "-id", "live1"])
    deadline = time.monotonic() + 10
    while not discovery.shim_running(proc.pid, "live1"):  # until exec finished
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def run_dir(tmp_path: Path, fake_shim: subprocess.Popen[bytes]) -> Path:
    """A run dir with a live sandbox (and its snapshot), a stale one, one without a state
    file, and a templates directory."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    for ns, sid, pid in (("ns", "live1", fake_shim.pid), ("ns", "stale1", dead.pid),
                         ("other", "live1", dead.pid)):  # same id, but not that shim's
        path = tmp_path / ns / sid
        path.mkdir(parents=True)
        SandboxState(sid, ns, pid, "/sock", containers=["c1", "c2"]).save(str(path))
    snapshot("live1", "ns", fake_shim.pid).save(str(tmp_path / "ns" / "live1"))
    (tmp_path / "ns" / "nostate").mkdir()
    (tmp_path / "templates" / "0123abcd").mkdir(parents=True)
    (tmp_path / "templates" / "0123abcd" / "state.json").write_text("{}")
    (tmp_path / "templates" / "0123abcd.lock").write_text("")
    return tmp_path


def test_discovery_skips_templates_and_flags_stale_dirs(run_dir: Path,
                                                        fake_shim: subprocess.Popen[bytes]
                                                        ) -> None:
    found = {(d.namespace, d.sandbox_id): d for d in discovery.discover(str(run_dir))}
    assert sorted(found) == [("ns", "live1"), ("ns", "nostate"), ("ns", "stale1"),
                             ("other", "live1")]
    assert not found["ns", "live1"].stale
    assert found["ns", "stale1"].stale and found["other", "live1"].stale
    assert found["ns", "nostate"].state is None and found["ns", "nostate"].stale
    assert [(d.namespace, d.sandbox_id) for d in discovery.live(str(run_dir))] == [
        ("ns", "live1")]


def test_discovery_skips_the_directory_the_template_store_uses() -> None:
    from bulkhead.template import store

    assert store.templates_dir().name == discovery.TEMPLATES


def families(text: str) -> dict[str, list[Sample]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_exposition_parses_with_every_sandbox_figure(run_dir: Path,
                                                      fake_shim: subprocess.Popen[bytes]) -> None:
    fams = families(server.exposition(str(run_dir)).decode())
    assert fams["bulkhead_sandboxes"][0].value == 1
    assert fams["bulkhead_stale_sandbox_dirs"][0].value == 3
    assert fams["bulkhead_monitor_scrape_errors"][0].value == 0
    assert fams["bulkhead_monitor_scrape_duration_seconds"][0].value > 0
    ours = {"namespace": "ns", "sandbox": "live1"}

    def value(name: str, **labels: str) -> float:
        hits = [s.value for s in fams[name] if s.labels == {**ours, **labels}]
        assert len(hits) == 1, (name, labels, fams[name])
        return hits[0]

    assert value("bulkhead_sandbox_info", shim_pid=str(fake_shim.pid), vm_pid="",
                 boot="template", template_miss="") == 1
    assert value("bulkhead_template_hit") == 1
    assert value("bulkhead_containers") == 2
    assert value("bulkhead_shim_pss_bytes") > 1 << 20
    assert value("bulkhead_shim_cpu_seconds") >= 0  # a counter: the parser drops _total
    assert value("bulkhead_boot_phase_seconds", phase="agent_ready") == 0.2
    assert value("bulkhead_guest_memory_bytes", state="total") == 512 << 20
    assert value("bulkhead_guest_cpu_seconds", mode="user") == 1.5
    assert value("bulkhead_guest_stats_errors") == 2
    assert 0 <= value("bulkhead_snapshot_age_seconds") < 60
    rpc = [s for s in fams["bulkhead_agent_rpc_duration_seconds"]
           if s.labels.get("method") == "CreateContainer"]
    by_name = {(s.name, s.labels.get("le")): s.value for s in rpc}
    assert by_name["bulkhead_agent_rpc_duration_seconds_count", None] == 2
    assert by_name["bulkhead_agent_rpc_duration_seconds_bucket", "0.005"] == 1
    assert by_name["bulkhead_agent_rpc_duration_seconds_bucket", "+Inf"] == 2
    assert by_name["bulkhead_agent_rpc_duration_seconds_sum", None] == pytest.approx(0.304)
    assert value("bulkhead_agent_rpc_errors", method="SignalProcess", code="not_found") == 1
    assert fams["bulkhead_vm_pss_bytes"] == []  # no VM runs


def test_a_broken_snapshot_is_counted_not_fatal(run_dir: Path) -> None:
    (run_dir / "ns" / "live1" / METRICS_FILE).write_text("{")
    fams = families(server.exposition(str(run_dir)).decode())
    assert fams["bulkhead_sandboxes"][0].value == 1
    assert fams["bulkhead_monitor_scrape_errors"][0].value == 1
    assert fams["bulkhead_shim_pss_bytes"]  # host figures still there


def test_ps_lists_live_and_stale_sandboxes(run_dir: Path,
                                           fake_shim: subprocess.Popen[bytes]) -> None:
    rows = {(r.namespace, r.sandbox): r for r in ps.rows(str(run_dir))}
    live = rows["ns", "live1"]
    assert (live.status, live.boot, live.containers) == ("no VM", "template", ["c1", "c2"])
    assert live.shim_pss_bytes and live.memory_bytes == live.shim_pss_bytes
    assert rows["ns", "stale1"].status == "stale" and rows["ns", "stale1"].memory_bytes is None
    text = ps.table(list(rows.values()))
    lines = text.splitlines()
    assert lines[0].split() == list(ps.COLUMNS)
    assert any("stale1" in line and "STALE (shim" in line for line in lines)
    assert ps.human_duration(3725) == "1h02m" and ps.human_bytes(3 << 20) == "3.0M"


# -- the command line -------------------------------------------------------------------


@pytest.mark.parametrize("text,message", [
    ("9619", "expected HOST:PORT"), ("localhost:9619", "not an IP address"),
    ("127.0.0.1:http", "not a number"), ("127.0.0.1:70000", "not a number"),
    (":9619", "expected HOST:PORT")])
def test_bad_listen_is_a_clear_error(text: str, message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["monitor", "--listen", text]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(server.ListenError):
        server.parse_listen(text)


def test_address_in_use_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_main(["monitor", "--listen", f"127.0.0.1:{port}"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
    assert server.parse_listen("[::1]:9619") == ("::1", 9619)
