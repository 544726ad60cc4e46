"""Fuzz bulkhead-agent's API inside a real VM: hostile requests on its control channel.

The VM is booted with the QEMU driver directly (no containerd); every request gets an exact
error, the agent keeps answering Check, and the VM is gone afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from bulkhead.event_loop import new_event_loop
from bulkhead.vmm.base import VMConfig, pid_gone
from bulkhead.vmm.qemu import QemuVM
from bulkhead_wire.guest_abi import AGENT_SERVICE
from bulkhead_wire.proto import agent_pb2
from bulkhead_wire.ttrpc import Code
from hostile import Call, RawTtrpc, acceptable, agent_calls
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.vm
EXAMPLES = int(os.environ.get("BULKHEAD_FUZZ_EXAMPLES", "300"))
GUEST = Path(os.environ.get("BULKHEAD_GUEST_DIR", "/usr/local/share/bulkhead/guest"))


def test_agent_survives_hostile_requests() -> None:
    kernel = GUEST / "vmlinux" if (GUEST / "vmlinux").is_file() else GUEST / "vmlinuz"
    root = Path(tempfile.mkdtemp(prefix="bh-fuzz-"))
    (root / "state").mkdir()
    (root / "shared").mkdir()
    loop = new_event_loop()  # the shim daemon's: children reaped by pidfd
    vm = QemuVM(VMConfig(name="fuzz", state_dir=root / "state", kernel=kernel,
                         initrd=GUEST / "initrd.img", rootfs=GUEST / "rootfs.erofs",
                         shared_dir=root / "shared", boot_timeout=60))
    bad: list[str] = []
    try:
        link = loop.run_until_complete(vm.start())
        ctl_sock: socket.socket = link.ctl[1].get_extra_info("socket")
        client = RawTtrpc(socket.socket(fileno=os.dup(ctl_sock.fileno())), AGENT_SERVICE)

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(agent_calls(str(root)))
        def one(call: Call) -> None:
            code, message = client.call(call)
            if not acceptable(code, message):
                bad.append(f"{call.method} {call.request!r:.300}: {Code(code).name} {message}")

        one()
        code, message = client.oversized()
        assert code == Code.RESOURCE_EXHAUSTED and "exceed" in message
        code, _ = client.call(Call("Check", agent_pb2.CheckRequest()))
        assert code == 0
        client.close()
    finally:
        loop.run_until_complete(vm.stop())
        asyncio.set_event_loop(None)
        loop.close()
        shutil.rmtree(root, ignore_errors=True)
    assert pid_gone(vm.pid)
    assert not bad, "\n".join(bad[:20])
