"""Starting a sandbox's VM: cloned from a template (the default) or booted cold.

The template path never makes a sandbox fail: a template that cannot be built or restored is
logged (and, if broken, removed) and the VM boots cold instead.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from bulkhead.config import Config, GuestImage
from bulkhead.template import builder, store
from bulkhead.template.key import TemplateError, TemplateKey, key_for
from bulkhead.vmm.accel import choose_accel
from bulkhead.vmm.base import AgentLink, VMConfig, VMError, VMKilled
from bulkhead.vmm.qemu import QemuVM, resolve_channel

log = logging.getLogger(__name__)

RESTORE_TIMEOUT = 10.0  # seconds for a clone's agent to answer before we boot cold instead


def vm_config(cfg: Config, image: GuestImage, name: str, state_dir: str,
              shared_dir: str) -> VMConfig:
    """The VM a sandbox asks for, from the runtime config and the guest image."""
    return VMConfig(
        name=name, state_dir=Path(state_dir), kernel=image.kernel, initrd=image.initrd,
        rootfs=image.rootfs, shared_dir=Path(shared_dir), memory_mib=cfg.memory_mib,
        vcpus=cfg.vcpus, channel=cfg.channel, accel=cfg.accel, qemu_binary=cfg.qemu_binary,
        boot_timeout=cfg.boot_timeout,
        extra_cmdline=f"{image.kernel_params} {cfg.kernel_params}".strip(), debug=cfg.debug,
        tcg_tb_mib=cfg.tcg_tb_mib, debug_shell=cfg.debug_shell,
        allow_unfiltered=cfg.allow_unfiltered_qemu)


async def template_key(config: VMConfig, image: GuestImage) -> tuple[VMConfig, TemplateKey]:
    """The config with accel and channel resolved, and the key of the template it matches."""
    accel, _ = await choose_accel(config)
    resolved = dataclasses.replace(config, accel=accel, channel=resolve_channel(config))
    return resolved, key_for(resolved, image.input_hash, resolved.accel, resolved.channel)


async def clone_config(config: VMConfig, image: GuestImage) -> tuple[VMConfig, TemplateKey]:
    """The config of a clone of the matching template (built first if there is none)."""
    resolved, key = await template_key(config, image)
    template = await builder.ensure(key, resolved)
    return dataclasses.replace(resolved, memory_file=template.memory, memory_shared=False,
                               restore_from=template.state,
                               boot_timeout=min(config.boot_timeout, RESTORE_TIMEOUT)), key


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
