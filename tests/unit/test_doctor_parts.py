"""bulkhead doctor's pure parts: findings, rendering, JSON, exit status, manifest matching,
containerd discovery from argv, severity rules, memory budget."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkhead.cli import build_parser
from bulkhead.doctor import cni, containerds, discover, image, memory, smoke
from bulkhead.doctor.discover import Containerd
from bulkhead.doctor.report import (
    Finding,
    Status,
    exit_code,
    failure,
    ok,
    render_json,
    render_line,
    run_check,
    summary,
    warning,
    worst,
)

# --- findings, rendering, exit status --------------------------------------------------------


def test_exit_code_fails_only_on_failure() -> None:
    assert exit_code([ok("a", "x"), warning("b", "y", "fix b")]) == 0
    assert exit_code([Finding("s", Status.SKIPPED, "skipped")]) == 0
    assert exit_code([ok("a", "x"), failure("c", "z", "fix c")]) == 1
    assert exit_code([]) == 0


def test_worst_orders_statuses() -> None:
    assert worst([Status.OK, Status.WARNING]) is Status.WARNING
    assert worst([Status.FAILURE, Status.SKIPPED, Status.OK]) is Status.FAILURE
    assert worst([]) is Status.OK


def test_json_is_a_list_of_the_five_fields() -> None:
    findings = [ok("qemu", "7.2"), failure("accel", "kvm forced", 'accel = "auto"')]
    findings[1].duration = 0.123456
    data = json.loads(render_json(findings))
    assert isinstance(data, list) and len(data) == 2
    assert all(set(item) == {"name", "status", "detail", "fix", "duration"} for item in data)
    assert data[1] == {"name": "accel", "status": "failure", "detail": "kvm forced",
                       "fix": 'accel = "auto"', "duration": 0.1235}
    assert data[0]["fix"] == ""


def test_text_line_shows_status_detail_time_and_fix() -> None:
    line = render_line(warning("vsock", "no /dev/vhost-vsock", "modprobe vhost_vsock"))
    first, second = line.splitlines()
    assert first.startswith("WARN vsock") and "no /dev/vhost-vsock" in first
    assert first.endswith("(0.00 s)")
    assert second.strip() == "fix: modprobe vhost_vsock"
    assert len(render_line(ok("qemu", "fine")).splitlines()) == 1


def test_text_line_indents_multi_line_detail_and_fix() -> None:
    line = render_line(failure("smoke test", "ctr failed\ntail 1\ntail 2", "one\ntwo"))
    lines = line.splitlines()
    assert lines[0].startswith("FAIL smoke test") and lines[0].endswith("s)")
    assert [s.strip() for s in lines[1:]] == ["tail 1", "tail 2", "fix: one", "two"]


def test_summary_counts_and_verdict() -> None:
    text = summary([ok("a", ""), warning("b", "", "f"), failure("c", "", "f")], 1.5)
    assert "FAILED" in text and "1 ok, 1 warning(s), 1 failure(s)" in text
    assert text.endswith("in 1.50 s")
    assert "healthy" in summary([ok("a", "")], 0.1)


def test_run_check_times_each_finding_and_turns_a_crash_into_a_failure() -> None:
    def two(ctx: object) -> Iterator[Finding]:
        yield ok("one", "first")
        yield ok("two", "second")

    def broken(ctx: object) -> Iterator[Finding]:
        yield ok("before", "fine")
        raise ValueError("boom")

    found = run_check("group", two, None)
    assert [f.name for f in found] == ["one", "two"]
    assert all(f.duration >= 0 for f in found)
    found = run_check("group", broken, None)
    assert [f.status for f in found] == [Status.OK, Status.FAILURE]
    assert found[1].name == "group" and "ValueError: boom" in found[1].detail


def test_doctor_command_options() -> None:
    args = build_parser().parse_args(["doctor"])
    assert (args.json, args.no_smoke, args.pods, args.containerd_config) == (False, False, 10, [])
    args = build_parser().parse_args(["doctor", "--json", "--no-smoke", "--pods", "3",
                                      "--containerd-config", "/a", "--containerd-config", "/b"])
    assert args.json and args.no_smoke and args.pods == 3
    assert args.containerd_config == [Path("/a"), Path("/b")]


# --- guest image manifest -------------------------------------------------------------------


def _image(tmp_path: Path) -> dict[str, object]:
    files = {}
    for role, name, data in (("kernel", "vmlinuz", b"k" * 10), ("initrd", "initrd.img", b"i")):
        (tmp_path / name).write_bytes(data)
        files[role] = {"file": name, "size": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()}
    return {"files": files}


def test_manifest_matches(tmp_path: Path) -> None:
    assert image.manifest_problems(tmp_path, _image(tmp_path)) == []


def test_manifest_names_a_missing_file(tmp_path: Path) -> None:
    manifest = _image(tmp_path)
    (tmp_path / "initrd.img").unlink()
    assert image.manifest_problems(tmp_path, manifest) == [
        f"{tmp_path / 'initrd.img'} (initrd) is missing"]


def test_manifest_names_a_wrong_size_then_a_wrong_digest(tmp_path: Path) -> None:
    manifest = _image(tmp_path)
    (tmp_path / "vmlinuz").write_bytes(b"k" * 11)
    assert image.manifest_problems(tmp_path, manifest) == [
        f"{tmp_path / 'vmlinuz'} (kernel) has 11 bytes, manifest.json records 10"]
    (tmp_path / "vmlinuz").write_bytes(b"x" * 10)
    assert image.manifest_problems(tmp_path, manifest) == [
        f"{tmp_path / 'vmlinuz'} (kernel) differs from its SHA-256 in manifest.json"]


def test_manifest_without_files(tmp_path: Path) -> None:
    assert image.manifest_problems(tmp_path, {"format": 1}) == [
        f"{tmp_path / 'manifest.json'} records no files"]


def test_build_fix_names_the_directory() -> None:
    assert image.build_fix("/srv/guest").startswith("packaging/build-guest-image --out "
                                                    "/srv/guest   (")


# --- containerd discovery and judgement ------------------------------------------------------


@pytest.mark.parametrize("argv, want", [
    (["containerd", "--config", "/x.toml"], "/x.toml"),
    (["containerd", "-c", "/y.toml", "--log-level", "debug"], "/y.toml"),
    (["containerd", "--config=/z.toml"], "/z.toml"),
    (["containerd"], None),
])
def test_config_flag(argv: list[str], want: str | None) -> None:
    assert discover.flag_value(argv, discover.CONFIG_FLAGS) == want


@pytest.mark.parametrize("argv, daemon", [
    (["/usr/bin/containerd"], True),
    (["containerd", "--config", "/c.toml", "-a", "/s.sock"], True),
    (["containerd", "config", "dump"], False),
    (["containerd-shim-runc-v2", "-namespace", "x"], False),
    ([], False),
])
def test_is_daemon(argv: list[str], daemon: bool) -> None:
    assert discover.is_daemon(argv) is daemon


def test_configured_address(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('version = 2\n[grpc]\naddress = "/run/x/containerd.sock"\n')
    assert discover.configured_address(config) == Path("/run/x/containerd.sock")
    assert discover.configured_address(tmp_path / "absent.toml") is None


V2_WITH_HANDLER = """version = 2
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.bulkhead]
  runtime_type = "io.containerd.bulkhead.v2"
  privileged_without_host_devices = true
"""


def test_handler_state() -> None:
    assert containerds.handler_state(V2_WITH_HANDLER, "1.6.20") == (True, True)
    assert containerds.handler_state("version = 2\n", "1.7.24") == (False, True)
    off = 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
    assert containerds.handler_state(off, "1.6.20") == (False, False)
    assert containerds.handler_state("not toml [", "1.6.20") == (False, True)


def _ctrd(running: bool, explicit: bool = False) -> Containerd:
    return Containerd("containerd pid 7" if running else "containerd (system)",
                      "/usr/bin/containerd", Path("/etc/containerd/config.toml"),
                      Path("/run/containerd/containerd.sock"), 7 if running else None, explicit)


def test_judge_severity() -> None:
    problems = ["no runtime `bulkhead`: run `bulkhead containerd-config --apply`"]
    assert containerds.judge(_ctrd(True), "1.6.20", "answering", [], True, True).status \
        is Status.OK
    found = containerds.judge(_ctrd(True), "1.6.20", "answering", problems, False, True)
    assert found.status is Status.FAILURE and found.name == "containerd pid 7"
    assert found.fix.splitlines()[0].startswith("bulkhead containerd-config --apply")
    assert problems[0] in found.fix
    assert containerds.judge(_ctrd(False), "1.6.20", "-", problems, False, True).status \
        is Status.WARNING
    assert containerds.judge(_ctrd(False, True), "1.6.20", "-", problems, False, True).status \
        is Status.FAILURE
    assert containerds.judge(_ctrd(True), "1.6.20", "-", problems, False, False).status \
        is Status.WARNING  # CRI off: only ctr/nerdctl use it


def test_apply_command_names_a_private_config() -> None:
    c = Containerd("containerd pid 9", "/opt/c/bin/containerd", Path("/run/x/config.toml"),
                   Path("/run/x/c.sock"), 9)
    assert containerds.apply_command(c) == (
        "bulkhead containerd-config --config /run/x/config.toml --containerd "
        "/opt/c/bin/containerd --apply   then restart this containerd")


def test_socket_answers_names_the_error(tmp_path: Path) -> None:
    live, why = containerds.socket_answers(tmp_path / "none.sock")
    assert not live and why


def test_socket_answers_on_a_path_longer_than_sun_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "containerd.sock"
    assert len(str(path)) > containerds.SUN_PATH_MAX
    fd = os.open(deep, os.O_PATH)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(f"/proc/self/fd/{fd}/{path.name}")  # the path is too long to bind
        os.close(fd)
        server.listen(1)
        assert containerds.socket_answers(path) == (True, "")


# --- CNI ------------------------------------------------------------------------------------


def test_cni_dirs_from_v2_and_v3_configs(tmp_path: Path) -> None:
    v2 = tmp_path / "v2.toml"
    v2.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\n'
                  'bin_dir = "/usr/lib/cni"\nconf_dir = "/etc/x"\n')
    dirs = cni.cni_dirs(v2)
    assert (dirs.bin_dirs, dirs.conf_dir, dirs.version) == ([Path("/usr/lib/cni")],
                                                            Path("/etc/x"), 2)
    v3 = tmp_path / "v3.toml"
    v3.write_text("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\n"
                  "bin_dirs = ['/a', '/b']\n")
    dirs = cni.cni_dirs(v3)
    assert (dirs.bin_dirs, dirs.conf_dir, dirs.version) == ([Path("/a"), Path("/b")],
                                                            cni.CONF_DIR, 3)
    dirs = cni.cni_dirs(tmp_path / "absent.toml")
    assert dirs.bin_dirs == [cni.CONTAINERD_BIN_DIR] and dirs.source == "containerd's defaults"


def test_network_configs(tmp_path: Path) -> None:
    (tmp_path / "10-a.conflist").write_text(json.dumps(cni.EXAMPLE_CONFLIST))
    (tmp_path / "20-b.conf").write_text('{"type": "bridge"}')
    (tmp_path / "30-broken.conflist").write_text("{")
    (tmp_path / "README").write_text("{}")
    assert [p.name for p in cni.network_configs(tmp_path)] == ["10-a.conflist", "20-b.conf"]
    assert cni.network_configs(tmp_path / "absent") == []


def test_missing_plugins(tmp_path: Path) -> None:
    for name in ("bridge", "host-local"):
        (tmp_path / name).write_text("")
    assert cni.missing_plugins(tmp_path) == ["loopback", "portmap"]


# --- memory ---------------------------------------------------------------------------------


def test_memory_budget() -> None:
    budget = memory.PodBudget(10, 512)
    assert budget.worst == 10 * (512 + memory.POD_OVERHEAD_MIB)
    assert memory.judge(budget.worst, budget, "/etc/bulkhead/config.toml").status is Status.OK
    short = memory.judge(budget.worst - 1, budget, "/etc/bulkhead/config.toml")
    assert short.status is Status.WARNING and "only 9 busy pods fit" in short.detail
    target = budget.largest_memory_mib(budget.worst - 1)
    assert short.fix.startswith(f"memory_mib = {target}   in /etc/bulkhead/config.toml")
    assert 10 * (target + memory.POD_OVERHEAD_MIB) <= budget.worst - 1
    assert memory.judge(memory.IDLE_POD_MIB - 1, budget, "x").status is Status.FAILURE


def test_mem_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 2048000 kB\nMemAvailable:    1048576 kB\n")
    assert memory.mem_available_mib(meminfo) == 1024


# --- smoke ----------------------------------------------------------------------------------


def test_short_phases() -> None:
    line = ("boot phases: qemu_start=0.000 agent_ready=0.288 container_created=0.658 "
            "container_first_output=0.837 container_exit_reported=0.885 (container x)")
    assert smoke.short_phases(line) == ("agent_ready 0.288 s, container_created 0.658 s, "
                                        "container_first_output 0.837 s, "
                                        "container_exit_reported 0.885 s")
    assert smoke.short_phases("") == ""


def test_qemu_9p_fixes_are_read_from_the_binary(tmp_path: Path) -> None:
    """The installed QEMU carries the CVE-2023-2861 fix; a binary without its marker (however
    new its version string) is refused, naming the CVE."""
    import shutil

    from bulkhead.doctor import qemu_safety

    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None
    assert qemu_safety.missing_9p_fixes(qemu) == []
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_bytes(b"\x7fELF QEMU emulator version 99.0.0 " + b"\0" * 4096)
    found = list(qemu_safety.check_9p_fixes(str(fake)))
    assert [f.status for f in found] == [Status.FAILURE]
    assert "CVE-2023-2861" in found[0].detail and found[0].fix
    assert [f.status for f in qemu_safety.check_9p_fixes(qemu)] == [Status.OK]


def test_doctor_reports_qemus_landlock_jail() -> None:
    """This kernel has Landlock: the check says so (every VM in the suite runs jailed)."""
    from bulkhead.config import Config
    from bulkhead.doctor import qemu_safety
    from bulkhead.vmm import landlock

    class Ctx:
        config = Config()

    found = list(qemu_safety.check_landlock(Ctx()))  # type: ignore[arg-type]
    want = Status.OK if landlock.abi_version() else Status.FAILURE
    assert [f.status for f in found] == [want]
