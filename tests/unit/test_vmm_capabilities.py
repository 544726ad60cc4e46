"""QEMU's capability drop (vmm/capabilities.py), on real processes spawned the way QEMU is:
only the share's capabilities are left, in every set and in the bounding set, no_new_privs is
on, and what the dropped ones guard (device nodes, mounts) fails for the child."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bulkhead.vmm import capabilities as caps
from bulkhead.vmm.process import spawn


def run(argv: list[str], tmp: Path, new_netns: bool = False) -> tuple[int, str]:
    async def go() -> int:
        proc = await spawn(argv, tmp / "out", [], new_netns=new_netns)
        return await proc.wait()
    status = asyncio.run(go())
    return status, (tmp / "out").read_text()


def status_caps(text: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in text.splitlines()
                                        if line.startswith("Cap"))}


def test_qemu_keeps_only_the_share_capabilities(tmp_path: Path) -> None:
    status, out = run(["cat", "/proc/self/status"], tmp_path)
    assert status == 0, out
    want = sum(1 << c for c in caps.SHARE_CAPS)
    found = status_caps(out)
    assert found["CapEff"] == found["CapPrm"] == found["CapBnd"] == want, found
    assert found["CapInh"] == found["CapAmb"] == 0, found
    assert "NoNewPrivs:\t1" in out


def test_own_tap_qemu_also_keeps_net_admin(tmp_path: Path) -> None:
    _, out = run(["cat", "/proc/self/status"], tmp_path, new_netns=True)
    assert status_caps(out)["CapEff"] == sum(1 << c for c in caps.qemu_caps(own_tap=True))


def test_no_device_nodes_and_no_mounts(tmp_path: Path) -> None:
    status, out = run(["mknod", str(tmp_path / "null"), "c", "1", "3"], tmp_path)
    assert status != 0 and not (tmp_path / "null").exists(), out
    (tmp_path / "m").mkdir()
    status, out = run(["mount", "-t", "tmpfs", "x", str(tmp_path / "m")], tmp_path)
    assert status != 0, out
    status, out = run(["mkfifo", str(tmp_path / "fifo")], tmp_path)  # FIFOs need no caps
    assert status == 0, out
