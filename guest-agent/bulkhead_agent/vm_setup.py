"""What a fresh VM takes from its shim before it runs anything for the sandbox.

The same for a cold boot and for a clone of a VM template: every clone starts from the
template's memory, so its RNG state, wall clock and hostname are the template's until the
shim's SetupSandbox replaces them, and the sandbox's 9p share is mounted only then (a
template never has it mounted: QEMU cannot migrate a mounted 9p export).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import time

from bulkhead_wire.guest_abi import (
    GUEST_CACHED_SHARE_DIR,
    GUEST_POD_SHM_DIR,
    GUEST_SHARED_DIR,
    ROOTFS_MOUNT_TAG,
    SHARE_MOUNT_TAG,
)

from bulkhead_agent.mounting import MS_NODEV, MS_NOEXEC, MS_NOSUID, MountError, mount_once

log = logging.getLogger(__name__)

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
MIN_ENTROPY = 32  # bytes the shim must send
NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=512000,cache=mmap"
# The second device over the same share: pages, dentries and attributes kept in the guest, for
# image layers only (nothing under that mount changes while the guest may have it cached).
CACHED_NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=512000,cache=loose"
POD_SHM_OPTIONS = "mode=1777,size=65536k"  # the pod's /dev/shm, sized like containerd's for runc


class SetupError(Exception):
    """A setup step failed; the message names the step."""


def reseed_rng(seed: bytes, device: str = "/dev/random") -> None:
    """Mix host entropy into the kernel pool (credited) and force the CRNG to reseed now."""
    if len(seed) < MIN_ENTROPY:
        raise SetupError(f"entropy: {len(seed)} bytes sent, at least {MIN_ENTROPY} needed")
    fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(seed) * 8, len(seed)) + seed)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    except OSError as exc:
        raise SetupError(f"reseed the kernel RNG: {exc.strerror}") from None
    finally:
        os.close(fd)


def set_wall_clock(unix_ns: int) -> None:
    """CLOCK_REALTIME from the host (a clone wakes up with the template's time)."""
    if unix_ns <= 0:
        return
    try:
        time.clock_settime_ns(time.CLOCK_REALTIME, unix_ns)
    except OSError as exc:
        raise SetupError(f"set the wall clock: {exc.strerror}") from None


def set_hostname(name: str) -> None:
    """The VM's own hostname (containers get theirs from their UTS namespace)."""
    if name:
        try:
            socket.sethostname(name[:64])
        except OSError as exc:
            raise SetupError(f"set hostname {name!r}: {exc.strerror}") from None


def mount_share() -> None:
    """The sandbox's 9p share (coherent, and cached for image layers), the pod's /dev/shm."""
    try:
        mount_once(SHARE_MOUNT_TAG, GUEST_SHARED_DIR, "9p", 0, NINEP_OPTIONS)
        mount_once(ROOTFS_MOUNT_TAG, GUEST_CACHED_SHARE_DIR, "9p", 0, CACHED_NINEP_OPTIONS)
        mount_once("shm", GUEST_POD_SHM_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   POD_SHM_OPTIONS)
    except MountError as exc:
        raise SetupError(str(exc)) from None


def set_sysctls(sysctls: dict[str, str], proc_sys: str = "/proc/sys") -> None:
    """The pod's VM-wide sysctls (kernel.* or net.ipv4.x names, as in an OCI spec)."""
    for name, value in sorted(sysctls.items()):
        parts = name.replace("/", ".").split(".")
        if not all(parts) or any(p in (".", "..") for p in parts):
            raise SetupError(f"sysctl {name!r} is not a sysctl name")
        try:
            with open(os.path.join(proc_sys, *parts), "w") as f:
                f.write(value)
        except OSError as exc:
            raise SetupError(f"sysctl {name}={value!r}: {exc.strerror}") from None


def setup(entropy: bytes, unix_ns: int, hostname: str, share: bool,
          sysctls: dict[str, str] | None = None) -> None:
    """Every step, in the order that matters: randomness first, the share last."""
    reseed_rng(entropy)
    set_wall_clock(unix_ns)
    set_hostname(hostname)
    set_sysctls(sysctls or {})
    if share:
        mount_share()
    log.info("sandbox setup done: rng reseeded, clock set, hostname %r, share %s", hostname,
             "mounted" if share else "not requested")
