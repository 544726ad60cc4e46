"""Making a template: boot a VM whose RAM is a shared file, let the agent warm up and hang up,
snapshot the devices, and keep memory + state + manifest (docs/templates.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from pathlib import Path

from bulkhead_wire.guest_abi import TEMPLATE_READY_LINE
from bulkhead_wire.ttrpc import Client, TtrpcError

from bulkhead.agent.client import AgentClient
from bulkhead.template import store
from bulkhead.template.key import TemplateError, TemplateKey
from bulkhead.vmm.base import CONSOLE_LOG, VMConfig, VMError
from bulkhead.vmm.console import read_ring
from bulkhead.vmm.qemu import QemuVM

log = logging.getLogger(__name__)

READY_MARKER = TEMPLATE_READY_LINE.encode()
READY_TIMEOUT = 30.0  # seconds from hang-up to the agent's READY on the console
BUILD_LOCK_TIMEOUT = 180.0  # seconds a shim waits for another one's build


async def ensure(key: TemplateKey, config: VMConfig) -> store.Template:
    """The template for key: the one on disk if it is whole, else built now (once, locked)."""
    template = store.load(key.digest)
    if template is not None and not template.problem(key):
        return template
    async with store.locked(key.digest, BUILD_LOCK_TIMEOUT):
        template = store.load(key.digest)
        if template is not None:
            why = template.problem(key)
            if not why:
                return template  # built by another shim while we waited
            store.remove(key.digest, why)
        template = await build(key, config)
    for other in store.all_templates():
        if other.digest != key.digest and _slot(other) == key.slot:
            store.remove(other.digest, f"replaced by {key.digest} (new guest image or QEMU)")
    return template


def _slot(template: store.Template) -> tuple[int, int, str, str]:
    k = template.manifest.get("key", {})
    return (k.get("memory_mib", 0), k.get("vcpus", 0), k.get("channel", ""), k.get("accel", ""))


async def build(key: TemplateKey, config: VMConfig) -> store.Template:
    """Boot, warm, snapshot; a failed build leaves nothing behind."""
    build_dir = store.new_build_dir(key.digest)
    t0 = time.monotonic()
    log.info("building VM template %s (%d MiB, %d vCPU, %s, %s)", key.digest, key.memory_mib,
             key.vcpus, key.accel, key.channel)
    try:
        facts = await _boot_and_snapshot(build_dir, config)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    facts["build_seconds"] = round(time.monotonic() - t0, 3)
    template = store.commit(build_dir, key, facts)
    log.info("VM template %s ready in %.1f s (state %d bytes, memory %d MiB on tmpfs)",
             key.digest, facts["build_seconds"], template.state.stat().st_size,
             template.disk_usage() >> 20)
    return template


async def _boot_and_snapshot(build_dir: Path, config: VMConfig) -> dict[str, object]:
    """Run the template VM in build_dir until its state file is written."""
    share = build_dir / "share"  # the 9p device needs an export; the template never mounts it
    share.mkdir()
    cfg = dataclasses.replace(config, name=f"template-{build_dir.name}", state_dir=build_dir,
                              shared_dir=share, memory_file=build_dir / store.MEMORY,
                              memory_shared=True, restore_from=None, tap_fd=-1)
    vm = QemuVM(cfg)
    try:
        link = await vm.start()
        client = Client(*link.ctl, name=f"agent of template VM {cfg.name}")
        client.start()
        try:
            agent = AgentClient(client)
            check = await agent.check()
            await agent.prepare_template()
        except (TtrpcError, ConnectionError) as exc:
            raise TemplateError(f"template VM {cfg.name}: the agent failed: {exc} "
                                f"(console tail: {vm.console_tail()})") from None
        finally:
            await client.close()
        vm.hang_up()
        await _wait_ready(build_dir / CONSOLE_LOG, vm)
        await vm.snapshot(build_dir / store.STATE)
    except VMError as exc:
        raise TemplateError(str(exc)) from None
    finally:
        await vm.stop()
    shutil.rmtree(share, ignore_errors=True)
    return {"accel": vm.accel, "channel": vm.channel, "guest_kernel": check.kernel_release,
            "agent_version": check.agent_version}


async def _wait_ready(console: Path, vm: QemuVM) -> None:
    """The agent says READY once both channels wait for a new host: the moment to snapshot."""
    deadline = time.monotonic() + READY_TIMEOUT
    while READY_MARKER not in read_ring(console):
        if time.monotonic() > deadline:
            raise TemplateError(f"template VM {vm.config.name}: no {READY_MARKER.decode()!r} "
                                f"on its console within {READY_TIMEOUT:g} s (console tail: "
                                f"{vm.console_tail()})")
        await asyncio.sleep(0.02)
