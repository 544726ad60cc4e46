"""QEMU's Landlock jail (vmm/landlock.py, vmm/qemu_jail.py) on real processes spawned the way
QEMU is: its own state directory works, and nothing outside reaches it, by path, by `..`
from inside, or by a link the guest could plant in the share."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from bulkhead.vmm import landlock
from bulkhead.vmm.base import VMConfig
from bulkhead.vmm.process import spawn
from bulkhead.vmm.qemu_jail import qemu_rules, qemu_ruleset

pytestmark = pytest.mark.skipif(landlock.abi_version() == 0, reason="no Landlock here")


def vm_config(tmp_path: Path) -> VMConfig:
    for d in ("state", "shared", "other"):
        (tmp_path / d).mkdir(exist_ok=True)
    for f in ("vmlinux", "initrd.img", "rootfs.erofs"):
        (tmp_path / f).write_bytes(b"x")
    return VMConfig(name="jailed", state_dir=tmp_path / "state", kernel=tmp_path / "vmlinux",
                    initrd=tmp_path / "initrd.img", rootfs=tmp_path / "rootfs.erofs",
                    shared_dir=tmp_path / "shared")


def jailed(script: str, cfg: VMConfig, tmp_path: Path) -> tuple[int, str]:
    """Run a shell script under the VM's ruleset, as QEMU would run."""
    ruleset = qemu_ruleset(cfg, Path("/usr/bin/sh"))
    assert ruleset is not None

    async def go() -> int:
        proc = await spawn(["/usr/bin/sh", "-c", script], tmp_path / "out", [],
                           ruleset=ruleset)
        return await proc.wait()
    try:
        status = asyncio.run(go())
    finally:
        os.close(ruleset)
    return status, (tmp_path / "out").read_text()


def test_the_sandbox_works_and_nothing_else_is_reached(tmp_path: Path) -> None:
    cfg = vm_config(tmp_path)
    (tmp_path / "other" / "secret").write_text("another sandbox's")
    (tmp_path / "shared" / "planted").symlink_to(tmp_path / "other" / "secret")
    state, shared, other = cfg.state_dir, cfg.shared_dir, tmp_path / "other"
    status, out = jailed(f"""
        echo served > {shared}/file && mkdir {shared}/d && mv {shared}/file {shared}/d/f \\
            && cat {shared}/d/f && rm -r {shared}/d && echo SHARE-OK
        echo x > {state}/console.log && echo STATE-OK
        cat {cfg.kernel} > /dev/null && echo IMAGE-OK
        cat /etc/hostname 2>/dev/null && echo READ-ETC
        cat {other}/secret 2>/dev/null && echo READ-OTHER
        cat {shared}/../other/secret 2>/dev/null && echo DOTDOT
        cat {shared}/planted 2>/dev/null && echo FOLLOWED-LINK
        echo x > /tmp/jail-escape-{os.getpid()} 2>/dev/null && echo WROTE-TMP
        mkfifo {shared}/fifo && echo FIFO-OK
        exit 0""", cfg, tmp_path)
    assert status == 0, out
    for ok in ("SHARE-OK", "STATE-OK", "IMAGE-OK", "FIFO-OK"):
        assert ok in out, out
    for escape in ("READ-ETC", "READ-OTHER", "DOTDOT", "FOLLOWED-LINK", "WROTE-TMP"):
        assert escape not in out, out
    assert not Path(f"/tmp/jail-escape-{os.getpid()}").exists()


def test_rules_name_only_the_vms_own_paths(tmp_path: Path) -> None:
    cfg = vm_config(tmp_path)
    paths = {r.path for r in qemu_rules(cfg, "/usr/bin/qemu-system-x86_64")}
    assert {str(cfg.state_dir), str(cfg.shared_dir), str(cfg.kernel), "/usr"} <= paths
    assert not any(p in paths for p in ("/", "/etc", "/run", "/proc", "/tmp", str(tmp_path)))
