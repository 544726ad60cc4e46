"""Starting a sandbox's VM: cloned from a template (the default) or booted cold.

The Sandbox takes a Launcher as an argument (tests hand it a fake); QemuLauncher is the real
one. The template path never makes a sandbox fail: a template that cannot be built or restored
is logged (and, if broken, removed) and the VM boots cold instead.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bulkhead.config import Config, GuestImage
from bulkhead.template import store
from bulkhead.template.key import TemplateError
from bulkhead.template.planning import clone_config, vm_config
from bulkhead.vmm.base import AgentLink, VirtualMachine, VMConfig, VMError, VMKilled
from bulkhead.vmm.qemu import QemuVM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VMRequest:
    """Where a sandbox's VM lives and what its NIC leads to."""

    name: str  # the sandbox id
    state_dir: str
    shared_dir: str
    tap_fd: int = -1  # an open tap in the pod's netns, or -1
    own_netns: bool = False  # QEMU in a network namespace of its own (a lone container)


class Launcher(Protocol):
    """What the Sandbox needs of a VMM: a running VM and its two agent channels."""

    async def launch(self, cfg: Config, request: VMRequest,
                     on_cold_boot: Callable[[str], None]) -> tuple[VirtualMachine, AgentLink]:
        """VMError if no VM could be started; on_cold_boot hears why it boots cold."""
        ...


class QemuLauncher:
    """QEMU microvm, a template clone unless the config says boot = "cold"."""

    async def launch(self, cfg: Config, request: VMRequest,
                     on_cold_boot: Callable[[str], None]) -> tuple[VirtualMachine, AgentLink]:
        """The VM the config and request describe, with both agent channels."""
        image = cfg.guest_image()
        config = vm_config(cfg, image, request.name, request.state_dir, request.shared_dir)
        config = dataclasses.replace(config, tap_fd=request.tap_fd, own_netns=request.own_netns)
        return await start_vm(cfg.boot, config, image, on_cold_boot)


async def start_vm(boot: str, config: VMConfig, image: GuestImage,
                   on_cold_boot: Callable[[str], None] | None = None
                   ) -> tuple[QemuVM, AgentLink]:
    """A running VM with both agent channels; VMError only if even a cold boot failed.
    on_cold_boot hears why the VM boots cold (for the metrics), before it does."""
    reason = f"the configuration says boot = {boot!r}"
    if boot == "template":
        try:
            clone, key = await clone_config(config, image)
        except (TemplateError, VMError, OSError) as exc:
            log.warning("sandbox %s: no VM template (%s); booting cold", config.name, exc)
            reason = f"no template: {exc}"
        else:
            vm = QemuVM(clone)
            try:
                return vm, await vm.start()
            except VMKilled:
                raise  # killed from outside: the template is fine, and the pod should fail
            except VMError as exc:
                store.remove(key.digest, f"restoring sandbox {config.name} from it failed: "
                                         f"{exc}")
                log.warning("sandbox %s: booting cold instead of from template %s",
                            config.name, key.digest)
                reason = f"restoring template {key.digest} failed: {exc}"
    if on_cold_boot is not None:
        on_cold_boot(reason)
    vm = QemuVM(config)
    return vm, await vm.start()
