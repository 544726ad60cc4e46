"""What QEMU must have before it may serve a hostile guest: its seccomp filter, the kernel's
Landlock (QEMU's jail), and the fixes of known 9p host escapes (checked in the binary, not read
off the version string, since distributions backport them: Debian's 7.2 builds have the
CVE-2023-2861 fix)."""

from __future__ import annotations

import mmap
import subprocess
from collections.abc import Iterator

from bulkhead.doctor.context import Context
from bulkhead.doctor.report import Finding, failure, ok, warning
from bulkhead.vmm import landlock
from bulkhead.vmm.qemu_cmdline import SANDBOX

# Each fix leaves a message of its own in the binary: the guest-triggered refusal it added.
NINEP_FIXES = (
    ("CVE-2023-2861", b"attempt to open special file",
     "a guest could open host device nodes through the 9p share (fixed in 7.2.4, 8.0.3)"),
)


def missing_9p_fixes(binary: str) -> list[tuple[str, str]]:
    """(CVE, what it allows) for each known 9p fix the QEMU binary lacks."""
    with open(binary, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
        return [(cve, why) for cve, marker, why in NINEP_FIXES if image.find(marker) < 0]


def check_9p_fixes(binary: str) -> Iterator[Finding]:
    """Refuse a QEMU whose 9p server has a known host escape."""
    try:
        missing = missing_9p_fixes(binary)
    except (OSError, ValueError) as exc:
        yield failure("qemu-9p", f"cannot read {binary} to check its 9p fixes: {exc}",
                      "make the QEMU binary readable by root")
        return
    if not missing:
        yield ok("qemu-9p", "QEMU has the fixes for known 9p host escapes ("
                 + ", ".join(cve for cve, _, _ in NINEP_FIXES) + ")")
        return
    for cve, why in missing:
        yield failure("qemu-9p", f"{binary} lacks the fix for {cve}: {why}",
                      "install a QEMU with the fix (Debian 12's qemu-system-x86 has it)")


def installs_seccomp(binary: str) -> tuple[bool, str]:
    """(True, "") if QEMU starts with our -sandbox filter; else (False, what it printed)."""
    res = subprocess.run([binary, "-M", "none", "-display", "none", "-nodefaults",
                          "-sandbox", SANDBOX, "-monitor", "stdio"], input="quit\n",
                         capture_output=True, text=True, timeout=20, check=False)
    return res.returncode == 0, (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]


def check_seccomp(ctx: Context, binary: str) -> Iterator[Finding]:
    """Every VM's QEMU runs under a seccomp filter; say whether this one can."""
    try:
        works, why = installs_seccomp(binary)
    except (OSError, subprocess.SubprocessError) as exc:
        works, why = False, str(exc)
    if works:
        yield ok("qemu-seccomp", f"QEMU installs its seccomp filter (-sandbox {SANDBOX})")
    elif ctx.config.allow_unfiltered_qemu:
        yield warning("qemu-seccomp", f"QEMU cannot install its seccomp filter ({why}); VMs "
                      "run without it because allow_unfiltered_qemu = true",
                      "use a QEMU built with seccomp (Debian's qemu-system-x86 is)")
    else:
        yield failure("qemu-seccomp", f"QEMU cannot install its seccomp filter ({why}): "
                      "every VM would fail to start", "use a QEMU built with seccomp, or set "
                      "allow_unfiltered_qemu = true to run VMs without the filter")


def check_landlock(ctx: Context) -> Iterator[Finding]:
    """Every QEMU runs in a Landlock jail of its own sandbox; say whether this kernel can."""
    abi = landlock.abi_version()
    if abi:
        yield ok("qemu-landlock", f"Landlock ABI {abi}: each QEMU is confined to its sandbox")
    elif ctx.config.allow_unfiltered_qemu:
        yield warning("qemu-landlock", "this kernel has no Landlock; VMs run with QEMU "
                      "unconfined because allow_unfiltered_qemu = true",
                      "boot a kernel with Landlock (5.13+, lsm= including landlock)")
    else:
        yield failure("qemu-landlock", "this kernel has no Landlock: every VM would fail to "
                      "start", "boot a kernel with Landlock (5.13+, lsm= including landlock), "
                      "or set allow_unfiltered_qemu = true to run QEMU unconfined")

