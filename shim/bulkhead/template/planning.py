"""What a sandbox VM asks for, and the template a clone of it needs: the VM config from the
runtime config and the guest image, and the key that names its template."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bulkhead.config import Config, GuestImage
from bulkhead.template import builder
from bulkhead.template.key import TemplateKey, key_for
from bulkhead.vmm.accel import choose_accel
from bulkhead.vmm.base import VMConfig
from bulkhead.vmm.qemu import resolve_channel

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
