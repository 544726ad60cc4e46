"""Choose KVM or TCG: KVM only when it can really run a stock guest kernel, else TCG.

/dev/kvm can exist without a hardware hypervisor behind it (e.g. a paravirtual PVM host, on which
stock kernels do not boot), so opening it is not enough: we also want vmx/svm CPU flags and a
probe boot of our own kernel. The probe result is cached per (kernel, QEMU binary) on disk.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bulkhead.vmm.base import VMConfig, VMError

log = logging.getLogger(__name__)

KVM_DEVICE = Path("/dev/kvm")
CPUINFO = Path("/proc/cpuinfo")
KMSG = Path("/dev/kmsg")
CACHE_FILE = Path("/var/lib/bulkhead/accel-probe.json")
PROBE_TIMEOUT = 10.0
PROBE_MARKER = "BULKHEAD-PROBE-OK"

# A probe boots config's kernel with `accel` and says whether the guest reported PROBE_MARKER.
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


def host_tsc_khz(cpuinfo: Path = CPUINFO, kmsg: Path = KMSG) -> int | None:
    """The host TSC frequency in kHz, or None if the host does not tell it.

    Best is the host kernel's own measurement in its log; then "cpu MHz" when the kernel knows
    the TSC rate (tsc_known_freq, typical of VMs); then the nominal "@ N.NNGHz" of the model
    name (frequency scaling makes "cpu MHz" wrong on bare metal); then "cpu MHz" anyway.
    """
    logged = _kernel_log_tsc_khz(kmsg)
    if logged:
        return logged
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    mhz = _float(fields.get("cpu MHz", ""))
    nominal = re.search(r"@\s*([0-9.]+)\s*GHz", fields.get("model name", ""))
    if mhz and "tsc_known_freq" in fields.get("flags", "").split():
        return round(mhz * 1000)
    if nominal and _float(nominal.group(1)):
        return round(float(nominal.group(1)) * 1_000_000)
    return round(mhz * 1000) if mhz else None


_TSC_LOG = (re.compile(rb"tsc: Refined TSC clocksource calibration: ([0-9.]+) MHz"),
            re.compile(rb"tsc: Detected ([0-9.]+) MHz processor"))


def _kernel_log_tsc_khz(kmsg: Path) -> int | None:
    """The TSC rate the host kernel logged at boot, if that record is still in the log."""
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    records: list[bytes] = []
    try:
        while True:  # /dev/kmsg returns one record per read, EAGAIN at the end
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: a record was overwritten while reading; go on
                continue
            if not chunk:
                break
            records.append(chunk)
    finally:
        os.close(fd)
    text = b"".join(records)
    for pattern in _TSC_LOG:
        found = pattern.findall(text)
        if found and _float(found[-1].decode()):
            return round(float(found[-1]) * 1000)
    return None


@functools.lru_cache(maxsize=4)
def tcg_kernel_params(cpuinfo: Path = CPUINFO, kmsg: Path = KMSG) -> list[str]:
    """Kernel parameters for a TCG guest: its TSC runs at the host TSC rate, so say that rate
    (PIT calibration hangs under TCG) and trust it (the jiffies watchdog is jittery there)."""
    khz = host_tsc_khz(cpuinfo, kmsg)
    if not khz:
        log.warning("host TSC rate unknown (%s, %s): TCG guests may hang calibrating it",
                    kmsg, cpuinfo)
        return []
    return [f"tsc_early_khz={khz}", "tsc=reliable"]


def _float(text: str) -> float | None:
    """float(text), or None for anything that is not a positive number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def resolve_binary(binary: str) -> Path:
    """Absolute path of the QEMU binary, or VMError naming what was looked for."""
    found = shutil.which(binary)
    if found is None:
        raise VMError(f"QEMU binary {binary!r} not found or not executable "
                      f"(PATH={os.environ.get('PATH', '')})")
    return Path(found).resolve()


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
        from bulkhead.vmm.qemu import probe_boot  # late: qemu imports this module
        probe = probe_boot
    ok, why = await probe(config, "kvm", PROBE_TIMEOUT)
    store_cache(cache_file, key, ok, why)
    return ("kvm" if ok else "tcg"), f"KVM probe: {why}"
