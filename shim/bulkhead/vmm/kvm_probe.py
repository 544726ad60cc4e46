"""The KVM probe boot: does our kernel really boot under this /dev/kvm? (A paravirtual host can
offer /dev/kvm on which stock kernels hang.) accel.choose_accel runs it and caches the answer."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from bulkhead.vmm.base import CONSOLE_LOG, STDERR_LOG, VMConfig
from bulkhead.vmm.process import describe_status, file_tail, spawn
from bulkhead.vmm.qemu_cmdline import base_args, kernel_cmdline, rootfs_args

PROBE_MARKER = "BULKHEAD-PROBE-OK"  # the guest init prints it in probe mode (bulkhead.probe=1)


async def probe_boot(config: VMConfig, accel: str, timeout: float) -> tuple[bool, str]:
    """Boot the guest with bulkhead.probe=1 under accel; ok iff the guest prints the marker.

    The guest init prints the marker after mounting the root disk, so the rootfs is attached.
    """
    tmp = Path(tempfile.mkdtemp(prefix="accel-probe-", dir=config.state_dir))
    probe_cfg = VMConfig(name=f"{config.name}-probe", state_dir=tmp, kernel=config.kernel,
                         initrd=config.initrd, rootfs=config.rootfs,
                         shared_dir=config.shared_dir, qemu_binary=config.qemu_binary,
                         memory_mib=256,
                         extra_cmdline=f"{config.extra_cmdline} bulkhead.probe=1".strip())
    argv = base_args(probe_cfg, accel, sandbox=False)
    argv += ["-kernel", str(config.kernel), "-initrd", str(config.initrd),
             "-append", kernel_cmdline(probe_cfg, "serial", accel), *rootfs_args(config)]
    proc: asyncio.subprocess.Process | None = None
    try:
        proc = await spawn(argv, tmp / STDERR_LOG, [])
        return await _watch_probe(proc, tmp, timeout)
    finally:
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


async def _watch_probe(proc: asyncio.subprocess.Process, tmp: Path, timeout: float
                       ) -> tuple[bool, str]:
    """Poll the probe console for the marker until QEMU exits or the timeout passes."""
    console = tmp / CONSOLE_LOG
    t0 = time.monotonic()
    exited = asyncio.ensure_future(proc.wait())
    try:
        while True:
            with contextlib.suppress(OSError):
                if PROBE_MARKER.encode() in console.read_bytes():
                    took = time.monotonic() - t0
                    return True, f"guest kernel booted and answered in {took:.2f} s"
            if exited.done():
                return False, (f"probe VM exited with {describe_status(exited.result())} before "
                               f"{PROBE_MARKER} (stderr: {file_tail(tmp / STDERR_LOG, 5)}; "
                               f"console tail: {file_tail(console, 5)})")
            if time.monotonic() - t0 >= timeout:
                return False, (f"no {PROBE_MARKER} on the probe console within {timeout:g} s "
                               f"(console tail: {file_tail(console, 5)})")
            await asyncio.wait({exited}, timeout=0.05)
    finally:
        exited.cancel()
