"""The console ring: QEMU's socket drained into two files that never outgrow the cap."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from bulkhead.vmm.console import ConsoleRing, read_ring, ring_files


def test_ring_keeps_the_newest_bytes_within_twice_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "console.log"

    async def main() -> None:
        ring = ConsoleRing(path, cap=1000)
        qemu = socket.socket(fileno=os.dup(ring.qemu_fd))
        ring.release_qemu_fd()
        ring.start()
        for i in range(300):
            qemu.sendall(f"line {i:04d}\n".encode())
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        qemu.close()
        await asyncio.sleep(0.05)
        ring.close()

    asyncio.run(main())
    assert sum(p.stat().st_size for p in ring_files(path)) <= 2000
    text = read_ring(path).decode()
    assert text.endswith("line 0299\n") and "line 0000" not in text
    lines = text.splitlines()
    assert lines == [f"line {i:04d}" for i in range(300 - len(lines), 300)]  # in order, none lost
