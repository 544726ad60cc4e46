"""Real QEMU microVMs under this host's accelerator (TCG here): boot, agent handshake, failures.

Needs the guest image from packaging/build-guest-image (BULKHEAD_GUEST_DIR overrides its place).
Timings are printed (run with -s) and appended to $BULKHEAD_VMM_TIMINGS if set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bulkhead.event_loop import run  # the shim daemon's loop: children reaped by pidfd
from bulkhead.vmm.base import VMConfig, VMError, kill_stale, pid_gone
from bulkhead.vmm.kvm_probe import PROBE_MARKER, probe_boot
from bulkhead.vmm.qemu import QemuVM

GUEST = Path(os.environ.get("BULKHEAD_GUEST_DIR", "/usr/local/share/bulkhead/guest"))
# vmlinux (uncompressed, PVH entry) boots faster under TCG than the bzImage; either works.
KERNEL = next((p for p in (GUEST / "vmlinux", GUEST / "vmlinuz") if p.is_file()),
              GUEST / "vmlinuz")
INITRD, ROOTFS = GUEST / "initrd.img", GUEST / "rootfs.erofs"
AGENT_TIMEOUT = float(os.environ.get("BULKHEAD_BOOT_TIMEOUT", "60"))

pytestmark = pytest.mark.vm
needs_image = pytest.mark.skipif(
    not all(p.is_file() for p in (KERNEL, INITRD, ROOTFS)),
    reason=f"guest image not built in {GUEST} (packaging/build-guest-image)")


def qemu_pids() -> set[int]:
    """Live QEMU processes on the host."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
            except (OSError, IndexError):
                continue
            if os.path.basename(argv0).startswith(b"qemu-system") and not pid_gone(int(entry)):
                out.add(int(entry))
    return out


def record(name: str, values: dict[str, float]) -> None:
    """Print a measurement and keep it where the caller asked."""
    line = json.dumps({"test": name, **{k: round(v, 4) for k, v in values.items()}})
    print(line)
    out = os.environ.get("BULKHEAD_VMM_TIMINGS")
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


@pytest.fixture
def vmdir() -> Iterator[Path]:
    """A private dir with state/ and shared/; afterwards no QEMU of ours and no dir remain."""
    before = qemu_pids()
    root = Path(tempfile.mkdtemp(prefix="bh-vmm-"))
    (root / "state").mkdir()
    (root / "shared").mkdir()
    try:
        yield root
    finally:
        leaked = {p for p in qemu_pids() - before
                  if str(root).encode() in Path(f"/proc/{p}/cmdline").read_bytes()}
        shutil.rmtree(root, ignore_errors=True)
        assert not leaked, f"QEMU left running: {leaked}"
    assert not root.exists()


def config(root: Path, **kw: Any) -> VMConfig:
    base: dict[str, Any] = dict(name="itest", state_dir=root / "state", kernel=KERNEL,
                                initrd=INITRD, rootfs=ROOTFS, shared_dir=root / "shared",
                                accel="auto", channel="auto", boot_timeout=AGENT_TIMEOUT)
    base.update(kw)
    return VMConfig(**base)


def assert_clean_state(root: Path) -> None:
    """stop() leaves only the logs."""
    left = {p.name for p in (root / "state").iterdir()}
    assert left <= {"console.log", "qemu.stderr"}, left


def test_missing_qemu_binary_is_named(vmdir: Path) -> None:
    for f in ("k", "i", "r"):
        (vmdir / f).write_bytes(b"x")
    cfg = config(vmdir, kernel=vmdir / "k", initrd=vmdir / "i", rootfs=vmdir / "r",
                 qemu_binary="qemu-system-nonexistent")
    with pytest.raises(VMError, match="qemu-system-nonexistent"):
        run(QemuVM(cfg).start())


def test_corrupt_kernel_reports_qemu_stderr(vmdir: Path) -> None:
    (vmdir / "vmlinuz").write_bytes(os.urandom(64 * 1024))
    (vmdir / "initrd").write_bytes(os.urandom(1024))
    (vmdir / "rootfs").write_bytes(bytes(4096))
    cfg = config(vmdir, kernel=vmdir / "vmlinuz", initrd=vmdir / "initrd",
                 rootfs=vmdir / "rootfs", accel="tcg", boot_timeout=20)
    vm = QemuVM(cfg)
    with pytest.raises(VMError) as err:
        run(vm.start())
    msg = str(err.value)
    assert "VM itest exited with status 1 during boot" in msg
    assert "stderr: qemu: linux kernel too old" in msg  # QEMU's own reason is in the message
    assert pid_gone(vm.pid)
    assert_clean_state(vmdir)


@needs_image
def test_probe_boot_under_tcg(vmdir: Path) -> None:
    """The KVM probe's mechanics, exercised with TCG (what runs here)."""
    t0 = time.monotonic()
    ok, why = run(probe_boot(config(vmdir), "tcg", AGENT_TIMEOUT))
    assert ok, why
    record("probe_boot_tcg", {"probe_s": time.monotonic() - t0})
    assert list((vmdir / "state").iterdir()) == []


@needs_image
def test_probe_cmdline_powers_off_with_console_captured(vmdir: Path) -> None:
    """A guest that powers off during boot: VMError with status and console tail, QEMU reaped."""
    cfg = config(vmdir, extra_cmdline="bulkhead.probe=1")
    vm = QemuVM(cfg)
    t0 = time.monotonic()
    with pytest.raises(VMError, match="exited with status 0 during boot") as err:
        run(vm.start())
    assert PROBE_MARKER in str(err.value)
    assert PROBE_MARKER in vm.console_tail(50)
    assert vm.accel == "tcg" or vm.accel == "kvm"
    assert pid_gone(vm.pid)
    assert_clean_state(vmdir)
    record("probe_poweroff", {"spawn_to_exit_reported_s": time.monotonic() - t0})


@needs_image
def test_boot_agent_check_and_stop(vmdir: Path) -> None:
    from bulkhead_wire.proto import agent_pb2
    from bulkhead_wire.ttrpc import Client

    async def main() -> None:
        vm = QemuVM(config(vmdir))
        try:
            link = await vm.start()
            t = vm.timings
            assert vm.sandboxed and vm.channel in ("serial", "vsock")
            status_lines = Path(f"/proc/{vm.pid}/status").read_text().splitlines()
            assert "Seccomp:\t2" in status_lines  # -sandbox on really installed a filter
            ctl = Client(*link.ctl, name="agent ctl")
            ctl.start()
            resp = await ctl.call("bulkhead.agent.v1.Agent", "Check", agent_pb2.CheckRequest(),
                                  agent_pb2.CheckResponse, timeout=10)
            t_check = time.monotonic()
            assert resp.agent_version and resp.kernel_release
            qmp = await vm.qmp()
            status = await qmp.execute("query-status")
            await qmp.close()
            assert status["status"] == "running"
            record("agent_boot", {
                "accel_tcg": float(vm.accel == "tcg"),
                "spawn_to_qemu_started_s": t["qemu_started"] - t["spawn"],
                "spawn_to_ctl_magic_s": t["ctl_ready"] - t["spawn"],
                "spawn_to_data_magic_s": t["data_ready"] - t["spawn"],
                "spawn_to_agent_connected_s": t["agent_connected"] - t["spawn"],
                "spawn_to_check_reply_s": t_check - t["spawn"],
                "guest_init_start_uptime": resp.init_start_uptime,
                "guest_switch_root_uptime": resp.switch_root_uptime,
                "guest_agent_start_uptime": resp.agent_start_uptime,
            })
            await ctl.close()
            t_stop = time.monotonic()
            await vm.stop()
            record("agent_boot_stop", {"stop_s": time.monotonic() - t_stop})
            assert pid_gone(vm.pid)
            await vm.stop()
        finally:
            await vm.stop()
    run(main())
    assert_clean_state(vmdir)


@needs_image
def test_kill_stale_kills_a_live_vm(vmdir: Path) -> None:
    async def main() -> None:
        vm = QemuVM(config(vmdir))
        try:
            await vm.start()
            other = vmdir / "other-state"
            other.mkdir()
            (other / "qemu.pid").write_text(f"{vm.pid}\n")
            assert kill_stale(other) is False  # not this dir's QEMU: untouched
            assert not pid_gone(vm.pid)
            t0 = time.monotonic()
            assert kill_stale(vm.config.state_dir) is True
            record("kill_stale", {"kill_stale_s": time.monotonic() - t0})
            assert await vm.wait() == -9
        finally:
            await vm.stop()
    run(main())
    assert_clean_state(vmdir)


@needs_image
def test_boot_timeout_kills_qemu(vmdir: Path) -> None:
    """An agent too slow for boot_timeout: named timeout, QEMU killed and reaped."""
    vm = QemuVM(config(vmdir, boot_timeout=0.2))
    with pytest.raises(VMError, match=r"agent did not answer on (virtio-serial port bulkhead\.ctl"
                                      r"|vsock port 1024.*) within 0.2 s"):
        run(vm.start())
    assert pid_gone(vm.pid)
    assert_clean_state(vmdir)


@needs_image
def test_guest_fatal_reason_leads_the_error(vmdir: Path) -> None:
    """The init powers off (exit 0) on a fatal error; the VMError starts with its FATAL line."""
    vm = QemuVM(config(vmdir, extra_cmdline="bulkhead.root=/dev/vdz"))
    with pytest.raises(VMError, match=r"exited with status 0 during boot: bulkhead-init: FATAL "
                                      r"root disk /dev/vdz did not appear"):
        run(vm.start())
    assert pid_gone(vm.pid)
    assert_clean_state(vmdir)
