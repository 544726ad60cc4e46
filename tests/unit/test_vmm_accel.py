"""Accelerator choice: forced values, device and CPU-flag checks, the cached KVM probe."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from bulkhead.vmm.accel import choose_accel, cpu_has_virt, kvm_device_usable
from bulkhead.vmm.base import VMConfig, VMError
from bulkhead.vmm.tsc import CPUINFO

QEMU = "qemu-system-x86_64"
needs_qemu = pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed")

FLAGS_VMX = ("processor\t: 0\nflags\t\t: fpu vme sse2 vmx avx2\n\n"
             "processor\t: 1\nflags\t\t: fpu vmx\n")
FLAGS_SVM = "flags\t\t: fpu svm lm\n"
FLAGS_NONE = "flags\t\t: fpu vme sse2 hypervisor avx2\nbugs\t\t: vmx_fake_bug\n"


class FakeProbe:
    """Counts probe boots and answers a fixed verdict."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.calls: list[str] = []

    async def __call__(self, config: VMConfig, accel: str, timeout: float) -> tuple[bool, str]:
        self.calls.append(accel)
        return self.ok, "probe says ok" if self.ok else "probe timed out"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path]:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k" * 100)
    kvm = tmp_path / "kvm"
    kvm.write_bytes(b"")  # a file that opens read-write stands in for a usable /dev/kvm
    return {"kernel": kernel, "kvm": kvm, "cache": tmp_path / "cache" / "accel-probe.json",
            "cpuinfo": tmp_path / "cpuinfo", "tmp": tmp_path}


def cfg(env: dict[str, Path], accel: str = "auto") -> VMConfig:
    return VMConfig(name="p", state_dir=env["tmp"], kernel=env["kernel"], initrd=env["kernel"],
                    rootfs=env["kernel"], shared_dir=env["tmp"], accel=accel)


def choose(env: dict[str, Path], cpuinfo: str, probe: FakeProbe, accel: str = "auto",
           kvm: Path | None = None) -> tuple[str, str]:
    env["cpuinfo"].write_text(cpuinfo)
    return asyncio.run(choose_accel(cfg(env, accel), cpuinfo=env["cpuinfo"],
                                    kvm_device=kvm or env["kvm"], cache_file=env["cache"],
                                    probe=probe))


def test_cpu_flags(tmp_path: Path) -> None:
    f = tmp_path / "c"
    for text, want in ((FLAGS_VMX, True), (FLAGS_SVM, True), (FLAGS_NONE, False), ("", False)):
        f.write_text(text)
        assert cpu_has_virt(f) is want
    assert cpu_has_virt(tmp_path / "missing") is False


def test_kvm_device_check(env: dict[str, Path]) -> None:
    assert kvm_device_usable(env["kvm"])[0] is True
    ok, why = kvm_device_usable(env["tmp"] / "nokvm")
    assert not ok and "nokvm" in why


def test_forced_values_skip_every_check(env: dict[str, Path]) -> None:
    probe = FakeProbe(ok=False)
    assert choose(env, FLAGS_NONE, probe, accel="kvm")[0] == "kvm"
    assert choose(env, FLAGS_VMX, probe, accel="tcg")[0] == "tcg"
    assert probe.calls == []
    with pytest.raises(VMError, match="hvf"):
        choose(env, FLAGS_VMX, probe, accel="hvf")


def test_no_device_means_tcg(env: dict[str, Path]) -> None:
    probe = FakeProbe(ok=True)
    accel, why = choose(env, FLAGS_VMX, probe, kvm=env["tmp"] / "absent")
    assert accel == "tcg" and "absent" in why and probe.calls == []


def test_no_cpu_flags_means_tcg_without_probe(env: dict[str, Path]) -> None:
    probe = FakeProbe(ok=True)
    accel, why = choose(env, FLAGS_NONE, probe)
    assert accel == "tcg" and "vmx/svm" in why and probe.calls == []


@needs_qemu
def test_probe_runs_once_and_is_cached(env: dict[str, Path]) -> None:
    probe = FakeProbe(ok=True)
    assert choose(env, FLAGS_VMX, probe)[0] == "kvm"
    accel, why = choose(env, FLAGS_VMX, probe)
    assert accel == "kvm" and "cached" in why
    assert probe.calls == ["kvm"]
    entry = next(iter(json.loads(env["cache"].read_text()).values()))
    assert entry["ok"] is True
    # A different kernel (size/mtime) invalidates the cached answer.
    env["kernel"].write_bytes(b"k" * 200)
    choose(env, FLAGS_VMX, probe)
    assert probe.calls == ["kvm", "kvm"]


@needs_qemu
def test_failed_probe_is_cached_as_tcg(env: dict[str, Path]) -> None:
    probe = FakeProbe(ok=False)
    accel, why = choose(env, FLAGS_SVM, probe)
    assert accel == "tcg" and "timed out" in why
    assert choose(env, FLAGS_SVM, probe)[0] == "tcg"
    assert probe.calls == ["kvm"]


@needs_qemu
def test_unwritable_cache_still_decides(env: dict[str, Path]) -> None:
    env["cache"].parent.write_text("a file where the cache directory should be")
    probe = FakeProbe(ok=True)
    assert choose(env, FLAGS_VMX, probe)[0] == "kvm"


@pytest.mark.skipif(cpu_has_virt(CPUINFO), reason="host has vmx/svm")
def test_this_host_uses_tcg_without_probe(env: dict[str, Path]) -> None:
    probe = FakeProbe(ok=True)
    accel, why = asyncio.run(choose_accel(cfg(env), cache_file=env["cache"], probe=probe))
    assert accel == "tcg" and probe.calls == []
    assert "vmx/svm" in why or "/dev/kvm" in why
