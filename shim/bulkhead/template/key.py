"""What makes two VMs interchangeable: a clone must match its template in every one of these."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

from bulkhead.vmm.base import VMConfig
from bulkhead.vmm.process import resolve_binary
from bulkhead.vmm.qemu_cmdline import DEVICE_SET, kernel_cmdline


class TemplateError(Exception):
    """A template cannot be found, built or used; the message names the template and why."""


@dataclass(frozen=True)
class TemplateKey:
    """Inputs of a template; their digest names it, so a changed input never finds an old one."""

    guest_image: str  # the guest image's input hash (kernel, initrd, root, agent)
    qemu: str  # binary path, size and mtime: an upgraded QEMU is another QEMU
    accel: str
    memory_mib: int
    vcpus: int
    channel: str
    device_set: int
    kernel_cmdline: str

    @property
    def digest(self) -> str:
        """The template's name on disk."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def slot(self) -> tuple[int, int, str, str]:
        """Templates in the same slot replace each other (the newest inputs win)."""
        return (self.memory_mib, self.vcpus, self.channel, self.accel)


def qemu_identity(binary: str) -> str:
    """Path, size and mtime of the QEMU that will run: cheap, and changes with every upgrade."""
    path = resolve_binary(binary)
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def key_for(config: VMConfig, guest_image_hash: str, accel: str, channel: str) -> TemplateKey:
    """The key of the template a VM with this config (and resolved accel/channel) can clone."""
    if not guest_image_hash:
        raise TemplateError(f"guest image of {config.kernel.parent} has no input hash in its "
                            "manifest: it cannot be matched to a template")
    return TemplateKey(guest_image=guest_image_hash, qemu=qemu_identity(config.qemu_binary),
                       accel=accel, memory_mib=config.memory_mib, vcpus=config.vcpus,
                       channel=channel, device_set=DEVICE_SET,
                       # Without the TCG-only TSC rate: it is read from the host and may vary
                       # in its last digits, and a clone of this host needs no other anyway.
                       kernel_cmdline=kernel_cmdline(config, channel, "kvm"))
