"""Checks of what a VM needs from the host: a readable config, QEMU with `-M microvm`, an
accelerator that really runs our guest, and the agent channel."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

from bulkhead.doctor.context import Context
from bulkhead.doctor.qemu_safety import check_9p_fixes, check_landlock, check_seccomp
from bulkhead.doctor.report import Finding, failure, ok, warning
from bulkhead.vmm.base import VMError
from bulkhead.vmm.process import resolve_binary
from bulkhead.vmm.vsock import VHOST_VSOCK_DEVICE, vsock_usable

QEMU_PACKAGE_FIX = "apt-get install qemu-system-x86   (or set qemu_binary = \"/path/to/qemu\")"

# The project's figures on this 2-core TCG host (docs/architecture.md "Timing", docs/pods.md).
TCG_COST = ("TCG costs: a template clone is ready in ~0.2 s and a cold boot in ~3.3 s "
            "(agent ready), every guest instruction is translated by QEMU (CPU-bound work runs "
            "far below native speed) and each VM carries a {tb} MiB translated-code buffer")


def check_config(ctx: Context) -> Iterator[Finding]:
    """The config file parses and every value is valid."""
    path = ctx.config_path
    if ctx.config_error:
        yield failure("config", ctx.config_error + " (the other checks use the defaults)",
                      f"correct that setting in {ctx.config_path} (README.md lists every "
                      "setting and its values)")
    elif not os.path.exists(path):
        yield ok("config", f"{path} absent: defaults in use "
                           f"({ctx.config.memory_mib} MiB, {ctx.config.vcpus} vCPU)")
    else:
        yield ok("config", f"{path} parses ({ctx.config.memory_mib} MiB, {ctx.config.vcpus} "
                           f"vCPU, accel={ctx.config.accel}, boot={ctx.config.boot})")


def qemu_version(binary: str) -> str:
    """`QEMU emulator version 7.2.22 (...)` -> "7.2.22 (...)"."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("QEMU emulator version ").strip()


def supports_microvm(binary: str) -> bool:
    """True if the binary lists the microvm machine type."""
    out = subprocess.run([binary, "-machine", "help"], capture_output=True, text=True,
                         timeout=10, check=False).stdout
    return any(line.split()[:1] == ["microvm"] for line in out.splitlines())


def check_qemu(ctx: Context) -> Iterator[Finding]:
    """The configured QEMU exists, runs, and has the microvm machine."""
    try:
        binary = str(resolve_binary(ctx.config.qemu_binary))
    except VMError as exc:
        yield failure("qemu", str(exc), QEMU_PACKAGE_FIX)
        return
    try:
        version = qemu_version(binary)
    except (OSError, subprocess.SubprocessError) as exc:
        yield failure("qemu", f"{binary} --version failed: {exc}", QEMU_PACKAGE_FIX)
        return
    if not supports_microvm(binary):
        yield failure("qemu", f"{binary} ({version}) has no microvm machine (-M microvm)",
                      "install a QEMU >= 4.2 built with microvm: " + QEMU_PACKAGE_FIX)
        return
    yield ok("qemu", f"{binary} {version}, -M microvm supported")
    yield from check_seccomp(ctx, binary)
    yield from check_9p_fixes(binary)
    yield from check_landlock(ctx)


def _tcg_fix(ctx: Context) -> str:
    """How this host could get KVM, from what is missing."""
    verdict = ctx.accel()
    if not verdict.cpu_virt:
        return ("none on this host: run Bulkhead on bare metal with VT-x/AMD-V enabled, or in a "
                "VM with nested virtualization (the CPU flags must show vmx or svm)")
    if not verdict.kvm_device_ok:
        return "modprobe kvm_intel   (AMD: modprobe kvm_amd), then check /dev/kvm is rw for root"
    return ("the probe boot failed with a real KVM: see the reason; `rm "
            "/var/lib/bulkhead/accel-probe.json` re-probes after a fix")


def check_accel(ctx: Context) -> Iterator[Finding]:
    """What accel=auto picks and why; a forced kvm that cannot boot our guest is a failure."""
    verdict = ctx.accel()
    tb = ctx.config.tcg_tb_mib or 1024
    if not verdict.auto:
        yield warning("accel", verdict.reason, "make the guest image and QEMU checks pass")
        return
    if verdict.auto == "kvm":
        if ctx.config.accel == "tcg":
            yield warning("accel", f"accel = \"tcg\" forces TCG, but KVM works here "
                                   f"({verdict.reason}). " + TCG_COST.format(tb=tb),
                          f"accel = \"auto\"   in {ctx.setting_source('accel')}")
        else:
            yield ok("accel", f"KVM ({verdict.reason})")
        return
    why = _tcg_why(verdict.reason, verdict.kvm_device_ok, verdict.cpu_virt)
    if ctx.config.accel == "kvm":
        yield failure("accel", f"accel = \"kvm\" is forced, but KVM cannot run a stock guest "
                               f"here: {why}; every VM would fail to boot",
                      f"accel = \"auto\"   in {ctx.setting_source('accel')}")
        return
    yield warning("accel", f"TCG: {why}. " + TCG_COST.format(tb=tb), _tcg_fix(ctx))


def _tcg_why(reason: str, device_ok: bool, cpu_virt: bool) -> str:
    """The reason auto falls back to TCG, naming the PVM case."""
    if device_ok and not cpu_virt:
        return ("/dev/kvm opens but the CPU shows no vmx/svm: a paravirtual (PVM-style) KVM "
                "that cannot run a stock guest kernel")
    return reason


def check_vsock(ctx: Context) -> Iterator[Finding]:
    """/dev/vhost-vsock and the configured agent channel agree."""
    usable = vsock_usable()
    channel = ctx.config.channel
    fix = "modprobe vhost_vsock"
    if usable:
        if channel == "serial":
            yield ok("vsock", f"{VHOST_VSOCK_DEVICE} usable, but channel = \"serial\" keeps "
                              "the agent on virtio-serial")
        else:
            yield ok("vsock", f"{VHOST_VSOCK_DEVICE} usable: the agent channel is vsock")
    elif channel == "vsock":
        yield failure("vsock", f"channel = \"vsock\" is forced but {VHOST_VSOCK_DEVICE} is not "
                               "usable; every VM would fail to start",
                      f"{fix}   or   channel = \"auto\" in {ctx.setting_source('channel')}")
    elif channel == "serial":
        yield ok("vsock", f"no {VHOST_VSOCK_DEVICE}; channel = \"serial\" (virtio-serial)")
    else:
        yield warning("vsock", f"no usable {VHOST_VSOCK_DEVICE}: the agent channel falls back "
                               "to virtio-serial (sandboxes work; vsock is used where the "
                               "device exists)", fix)
