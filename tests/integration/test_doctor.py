"""`bulkhead doctor` (installed) on this host: healthy with its smoke test, then deliberately
broken hosts without it (missing guest image, containerd configs without the handler or of the
wrong version, an accelerator forced by config that cannot run here). Nothing may leak."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bulkhead.demo import procs
from bulkhead.demo.ctr import CtrClient
from bulkhead.demo.instance import DEMO_ROOT_BASE, DEMO_RUN_BASE
from bulkhead.doctor import smoke
from bulkhead.install import containerd_config as cc
from bulkhead.vmm import accel
from harness.containerd import (
    TEST_ROOT_BASE,
    TEST_RUN_BASE,
    ContainerdConfig,
    PrivateContainerd,
    available_versions,
)
from leaks import LeakBaseline, find_leaks, is_qemu

pytestmark = [pytest.mark.containerd]
BULKHEAD = Path(sys.executable).parent / "bulkhead"  # the installed command
GUEST_DIR = Path("/usr/local/share/bulkhead/guest")
NO_CONTAINERD = CtrClient(Path("ctr"), Path("/nonexistent/containerd.sock"))


@dataclass
class Doctor:
    """One `bulkhead doctor --json` run."""

    returncode: int
    findings: list[dict[str, Any]]
    stderr: str
    wall: float

    def named(self, name: str) -> dict[str, Any]:
        return next(f for f in self.findings if f["name"] == name)

    def with_status(self, status: str, ours: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
        """Findings of that status, leaving out containerds this test did not start (another
        agent's, which may run outside the machine lock)."""
        return [f for f in self.findings if f["status"] == status and not _foreign(f, ours)]


def _foreign(finding: dict[str, Any], ours: frozenset[int]) -> bool:
    name = str(finding["name"])
    return name.startswith("containerd pid ") and int(name.split()[-1]) not in ours


def doctor(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Doctor:
    """Run the installed doctor; stdout must be exactly one JSON list."""
    start = time.monotonic()
    res = subprocess.run([str(BULKHEAD), "doctor", "--json", *args], capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, **(env or {})})
    wall = time.monotonic() - start
    findings = json.loads(res.stdout)
    assert isinstance(findings, list), res.stdout
    return Doctor(res.returncode, findings, res.stderr, wall)


def _test_dirs() -> set[str]:
    bases = (TEST_ROOT_BASE, TEST_RUN_BASE, DEMO_ROOT_BASE, DEMO_RUN_BASE)  # the smoke test's
    return {str(base / name) for base in bases if base.is_dir()
            for name in os.listdir(base)}


def _containerd_pids() -> set[int]:
    return {p.pid for p in procs.processes() if p.exe_name == "containerd"}


@pytest.fixture
def nothing_leaks() -> Iterator[None]:
    """No VM, shim, containerd, private instance dir, mount or sandbox state survives."""
    baseline = LeakBaseline.capture()
    dirs, pids = _test_dirs(), _containerd_pids()
    yield
    deadline = time.monotonic() + 10
    while True:
        leaks = find_leaks(NO_CONTAINERD, baseline)
        leaks += [f"instance dir {d}" for d in sorted(_test_dirs() - dirs)]
        leaks += [f"containerd pid {p}" for p in sorted(_containerd_pids() - pids)]
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not leaks, "leaked:\n  " + "\n  ".join(leaks)


@pytest.mark.vm
def test_healthy_host_with_smoke_test(nothing_leaks: None) -> None:
    run = doctor()
    print(f"\nbulkhead doctor --json (with its smoke test): {run.wall:.2f} s wall; "
          f"{run.stderr.strip()}")
    for f in run.findings:
        print(f"  {f['status']:8s} {f['name']:22s} {f['duration']:.2f} s")
    assert run.with_status("failure") == []
    assert {f["status"] for f in run.findings if not _foreign(f, frozenset())} <= {"ok",
                                                                                   "warning"}
    assert run.returncode == int(any(f["status"] == "failure" for f in run.findings))
    names = [f["name"] for f in run.findings]
    for name in ("config", "qemu", "accel", "vsock", "guest image", "template", "cni plugins",
                 "cni config", "memory", "smoke test"):
        assert name in names
    for f in run.with_status("warning"):
        assert f["fix"], f  # every warning says what to do
    smoke = run.named("smoke test")
    assert smoke["status"] == "ok", smoke
    assert "boot phases:" in smoke["detail"] and "agent_ready" in smoke["detail"]
    assert run.named("guest image")["status"] == "ok"


def test_missing_guest_image_dir(tmp_path: Path, nothing_leaks: None) -> None:
    empty = tmp_path / "guest"
    empty.mkdir()
    run = doctor("--no-smoke", env={"BULKHEAD_GUEST_DIR": str(empty)})
    assert run.returncode == 1
    found = run.named("guest image")
    assert found["status"] == "failure"
    assert str(empty / "manifest.json") in found["detail"]
    assert found["fix"].startswith(f"packaging/build-guest-image --out {empty}")
    assert [f["name"] for f in run.with_status("failure")] == ["guest image"]


def test_guest_image_file_missing_named_by_a_config_file(tmp_path: Path,
                                                         nothing_leaks: None) -> None:
    partial = tmp_path / "guest"
    partial.mkdir()
    manifest = json.loads((GUEST_DIR / "manifest.json").read_text())
    shutil.copy(GUEST_DIR / "manifest.json", partial)
    rootfs = manifest["rootfs"]["file"]
    for entry in manifest["files"].values():
        if entry["file"] != rootfs:
            (partial / entry["file"]).symlink_to(GUEST_DIR / entry["file"])
    config = tmp_path / "config.toml"
    config.write_text(f'guest_dir = "{partial}"\n')
    run = doctor("--no-smoke", env={"BULKHEAD_CONFIG": str(config)})
    assert run.returncode == 1
    found = run.named("guest image")
    assert found["status"] == "failure"
    assert f"{partial / rootfs} (rootfs) is missing" in found["detail"]
    assert run.named("config")["status"] == "ok" and str(config) in run.named("config")["detail"]


class NoHandlerContainerd(PrivateContainerd):
    """A CRI-enabled containerd whose config declares runc only."""

    def config(self) -> ContainerdConfig:
        cfg = super().config()
        cfg.runtimes = {"runc": cc.runc_handler_settings()}
        return cfg


class V2ConfigContainerd(PrivateContainerd):
    """containerd 2.x on a version 2 file (it migrates it) that declares the handler."""

    def config(self) -> ContainerdConfig:
        cfg = WithoutNri(**{**super().config().__dict__, "containerd_version": "1.7"})
        return cfg


@dataclass
class WithoutNri(ContainerdConfig):
    """A version 2 file that still keeps 2.x's NRI socket (shared by instances) off."""

    def as_dict(self) -> dict[str, object]:
        doc = super().as_dict()
        plugins = doc["plugins"]
        assert isinstance(plugins, dict)
        plugins[cc.NRI_PLUGIN] = {"disable": True}
        return doc


def _containerd_failure(run: Doctor, instance: PrivateContainerd, pid: int | None
                        ) -> dict[str, Any]:
    """The one failure, which must be this instance's."""
    assert pid is not None
    failures = run.with_status("failure", frozenset({pid}))
    assert [f["name"] for f in failures] == [f"containerd pid {pid}"], failures
    found = failures[0]
    assert str(instance.config_path) in found["detail"]
    binary = "" if instance.install.containerd == Path("/usr/bin/containerd") else \
        f"--containerd {instance.install.containerd} "  # the system one needs no flag
    assert found["fix"].splitlines()[0] == (
        f"bulkhead containerd-config --config {instance.config_path} {binary}--apply   "
        "then restart this containerd")
    return found


@pytest.mark.parametrize("version", ["1.6", "1.7"])
def test_containerd_without_the_handler(version: str, nothing_leaks: None) -> None:
    if version not in available_versions():
        pytest.skip(f"containerd {version} is not installed")
    with NoHandlerContainerd(name=f"doctor-nohandler-{os.getpid()}", version=version,
                             enable_cri=True, cri_network=False) as instance:
        pid = instance.pid
        run = doctor("--no-smoke")
    assert run.returncode == 1
    found = _containerd_failure(run, instance, pid)
    assert "declares no runtime `bulkhead`" in found["detail"]
    assert 'runtimes.bulkhead]' in found["fix"]


def test_containerd_2_on_a_version_2_config(nothing_leaks: None) -> None:
    if "2.1" not in available_versions():
        pytest.skip("containerd 2.1 is not installed")
    with V2ConfigContainerd(name=f"doctor-v2on21-{os.getpid()}", version="2.1",
                            enable_cri=True, cri_network=False) as instance:
        pid = instance.pid
        run = doctor("--no-smoke")
    assert run.returncode == 1
    found = _containerd_failure(run, instance, pid)
    assert "is config version 2" in found["detail"] and "needs version 3" in found["detail"]
    assert "config migrate" in found["fix"]


def test_forced_kvm_that_cannot_run_here(tmp_path: Path, nothing_leaks: None) -> None:
    if accel.kvm_device_usable()[0] and accel.cpu_has_virt():
        pytest.skip("this host may run KVM guests; the forced-kvm failure needs one that cannot")
    config = tmp_path / "config.toml"
    config.write_text('accel = "kvm"\n')
    run = doctor("--no-smoke", env={"BULKHEAD_CONFIG": str(config)})
    assert run.returncode == 1
    assert [f["name"] for f in run.with_status("failure")] == ["accel"]
    found = run.named("accel")
    assert 'accel = "kvm" is forced' in found["detail"]
    assert found["fix"] == f'accel = "auto"   in {config}'


def _wait_for_vm(proc: subprocess.Popen[str], timeout: float = 60) -> bool:
    """Until the smoke test's VM runs (True) or the doctor ended first (False); only its own
    VM counts (one of an earlier test may still be on its way out)."""
    deadline = time.monotonic() + timeout
    own = f"/{smoke.NAMESPACE}/"
    while time.monotonic() < deadline and proc.poll() is None:
        if any(is_qemu(p) and own in p.command for p in procs.processes()):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.vm
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_smoke_test_cleans_up(how: str, nothing_leaks: None) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM while the
    smoke test's VM runs: the doctor removes its containerd, shim and VM, then exits 130."""
    # As from a terminal: SIGINT not ignored (a run started in the background, `make test &`,
    # would pass SIG_IGN on, and Python then never raises KeyboardInterrupt).
    proc = subprocess.Popen([str(BULKHEAD), "doctor"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert _wait_for_vm(proc), "the smoke test's VM never showed up"
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err
