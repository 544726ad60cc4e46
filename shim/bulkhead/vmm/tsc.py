"""The host TSC rate, which a TCG guest must be told on its command line: under TCG the guest TSC
runs at the host rate and the kernel's own calibration against the PIT hangs."""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
KMSG = Path("/dev/kmsg")


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
