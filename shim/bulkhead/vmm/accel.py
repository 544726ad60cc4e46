"""Choose KVM or TCG: KVM only when it can really run a stock guest kernel, else TCG.

/dev/kvm can exist without a hardware hypervisor behind it (e.g. a paravirtual PVM host, on which
stock kernels do not boot), so opening it is not enough: we also want vmx/svm CPU flags and a
probe boot of our own kernel (kvm_probe). The probe result is cached per (kernel, QEMU binary) on
disk. The TCG guest's TSC parameters are in tsc.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bulkhead.vmm.base import VMConfig, VMError
from bulkhead.vmm.kvm_probe import probe_boot
from bulkhead.vmm.process import resolve_binary
from bulkhead.vmm.tsc import CPUINFO

log = logging.getLogger(__name__)

KVM_DEVICE = Path("/dev/kvm")
CACHE_FILE = Path("/var/lib/bulkhead/accel-probe.json")
PROBE_TIMEOUT = 10.0

# A probe boots config's kernel with `accel` and says whether the guest reported
# kvm_probe.PROBE_MARKER.
Probe = Callable[[VMConfig, str, float], Awaitable[tuple[bool, str]]]


def kvm_device_usable(device: Path = KVM_DEVICE) -> tuple[bool, str]:
    """Whether the KVM device opens read-write, with the reason when it does not."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"cannot open {device} read-write: {exc.strerror}"
    os.close(fd)
    return True, f"{device} opens read-write"


def cpu_has_virt(cpuinfo: Path = CPUINFO) -> bool:
    """True if the CPU flags advertise hardware virtualization (Intel vmx or AMD svm)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and {"vmx", "svm"} & set(value.split()):
            return True
    return False


def probe_key(config: VMConfig) -> str:
    """Cache key: the probe answer holds while kernel and QEMU binary stay the same files."""
    kst = config.kernel.stat()
    qemu = resolve_binary(config.qemu_binary)
    qst = qemu.stat()
    return (f"kernel={config.kernel.resolve()}:{kst.st_size}:{kst.st_mtime_ns}"
            f"|qemu={qemu}:{qst.st_size}:{qst.st_mtime_ns}")


def load_cache(cache_file: Path) -> dict[str, Any]:
    """The probe cache, or an empty one if missing or unreadable."""
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store_cache(cache_file: Path, key: str, ok: bool, reason: str) -> None:
    """Record one probe result atomically; a cache we cannot write only costs a re-probe."""
    data = load_cache(cache_file)
    data[key] = {"ok": ok, "reason": reason, "at": time.time()}
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, cache_file)
    except OSError as exc:
        log.warning("cannot write accel probe cache %s: %s", cache_file, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


async def choose_accel(config: VMConfig, *, cpuinfo: Path = CPUINFO,
                       kvm_device: Path = KVM_DEVICE, cache_file: Path = CACHE_FILE,
                       probe: Probe | None = None) -> tuple[str, str]:
    """Return (accel, reason): config.accel when forced, else KVM iff every check passes."""
    accel, reason = await _decide(config, cpuinfo, kvm_device, cache_file, probe)
    log.info("VM %s: accel=%s (%s)", config.name, accel, reason)
    return accel, reason


async def _decide(config: VMConfig, cpuinfo: Path, kvm_device: Path, cache_file: Path,
                  probe: Probe | None) -> tuple[str, str]:
    """The decision itself, cheapest checks first."""
    if config.accel in ("kvm", "tcg"):
        return config.accel, f"accel={config.accel} set in the configuration"
    if config.accel != "auto":
        raise VMError(f"VM {config.name}: unknown accel {config.accel!r} (auto, kvm or tcg)")
    usable, why = kvm_device_usable(kvm_device)
    if not usable:
        return "tcg", why
    if not cpu_has_virt(cpuinfo):
        return "tcg", f"no vmx/svm CPU flags in {cpuinfo}: {kvm_device} is not a usable " \
                      "hardware hypervisor"
    key = probe_key(config)
    cached = load_cache(cache_file).get(key)
    if isinstance(cached, dict) and "ok" in cached:
        ok, why = bool(cached["ok"]), str(cached.get("reason", ""))
        return ("kvm" if ok else "tcg"), f"cached KVM probe: {why}"
    if probe is None:
        probe = probe_boot
    ok, why = await probe(config, "kvm", PROBE_TIMEOUT)
    store_cache(cache_file, key, ok, why)
    return ("kvm" if ok else "tcg"), f"KVM probe: {why}"
