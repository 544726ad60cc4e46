"""QemuVM's spawn/handshake/stop logic against a scripted fake QEMU (real QEMU: integration)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkhead.event_loop import run  # the shim daemon's loop: children reaped by pidfd
from bulkhead.vmm import qemu as qemu_mod
from bulkhead.vmm.base import VMConfig, VMError, pid_gone
from bulkhead.vmm.qemu import QemuVM

REPO = Path(__file__).resolve().parents[2]
TREE_PATH = os.pathsep.join(str(REPO / d) for d in ("shim", "wire"))  # not the installed copy

# Plays QEMU's part: takes the inherited listening fds from -chardev socket,...,fd=N, writes to
# the console socket, then behaves as FAKE_QEMU_MODE says.
FAKE_QEMU = r'''
import hashlib, hmac, os, signal, socket, sys, time
mode = os.environ.get("FAKE_QEMU_MODE", "ok")
args = sys.argv[1:]
fds, console = {}, None
for i, a in enumerate(args):
    if a == "-chardev":
        kind, *rest = args[i + 1].split(",")
        opts = dict(kv.split("=", 1) for kv in rest if "=" in kv)
        if kind == "socket" and opts["id"] == "console":  # a connected socket, written to
            console = socket.socket(fileno=int(opts["fd"]))
        elif kind == "socket":
            fds[opts["id"]] = int(opts["fd"])
console.sendall(b"\x1b[0mfake kernel line 1\r\nfake kernel line 2\r\n")
if mode == "nosandbox" and "-sandbox" in args:
    sys.exit("qemu-system-x86_64: -sandbox support is not enabled in this QEMU binary")
if mode == "fatal":
    console.sendall(b"bulkhead-init: FATAL mount /dev/vda (erofs) on /newroot\r\n"
                    b"[ 1.0] reboot: Power down\r\n")
    sys.exit(0)
if mode == "exit":
    print("qemu-system-x86_64: could not load kernel 'bad'", file=sys.stderr)
    sys.exit(3)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
conns = []
key_port = socket.socket(fileno=fds["key"])
for role in ("ctl", "data"):
    conn, _ = socket.socket(fileno=fds[role]).accept()
    conns.append(conn)
    if mode == "hang" or (mode == "hang-data" and role == "data"):
        continue
    if mode == "close":
        conn.close()
        time.sleep(0.2)
        sys.exit(5)
    # The agent's half of the channel proof, with the key asked for on the key port.
    key_port.sendall(b"?")
    key = b""
    while len(key) < 32:
        key += key_port.recv(32 - len(key))
    if mode == "badproof":
        key = b"w" * 32
    nonce_a = os.urandom(16)
    conn.sendall((b"BHAGENTX" if mode == "badmagic" else b"BHAGENT1") + nonce_a)
    if mode == "badmagic":
        continue
    proof = b""
    while len(proof) < 48:
        proof += conn.recv(48 - len(proof))
    nonce_s = proof[:16]
    conn.sendall(hmac.new(key, b"agent|" + role.encode() + b"|" + nonce_a + nonce_s,
                          hashlib.sha256).digest())
if mode == "poweroff":
    sys.exit(0)
while data := conns[0].recv(4096):
    conns[0].sendall(data)
while True:
    time.sleep(60)
'''


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) pids whose cmdline contains text."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in raw and not pid_gone(int(entry)):
                found.append(int(entry))
    return found


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[VMConfig]:
    """A config whose QEMU is the fake; afterwards no process may mention tmp_path."""
    fake = tmp_path / "qemu-system-fake"
    # The system interpreter (not the venv's, whose pyvenv.cfg QEMU's jail does not let it read)
    fake.write_text(f"#!{os.path.realpath(sys.executable)} -I\n{FAKE_QEMU}")
    fake.chmod(0o755)
    for d in ("state", "shared"):
        (tmp_path / d).mkdir()
    for f in ("vmlinuz", "initrd.img", "rootfs.erofs"):
        (tmp_path / f).write_bytes(b"x")
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")
    yield VMConfig(name="pod-a", state_dir=tmp_path / "state", kernel=tmp_path / "vmlinuz",
                   initrd=tmp_path / "initrd.img", rootfs=tmp_path / "rootfs.erofs",
                   shared_dir=tmp_path / "shared", qemu_binary=str(fake), accel="tcg",
                   channel="serial", boot_timeout=10)
    assert processes_mentioning(str(tmp_path)) == []


def runtime_files(cfg: VMConfig) -> set[str]:
    return {p.name for p in cfg.state_dir.iterdir()}


def test_start_handshake_and_stop(cfg: VMConfig) -> None:
    async def main() -> None:
        vm = QemuVM(cfg)
        link = await vm.start()
        assert vm.accel == "tcg" and vm.channel == "serial" and vm.sandboxed
        assert int((cfg.state_dir / "qemu.pid").read_text()) == vm.pid
        assert {"qmp.sock", "ctl.sock", "data.sock", "console.log", "qemu.stderr"} <= \
            runtime_files(cfg)
        for key in ("spawn", "qemu_started", "ctl_ready", "data_ready", "agent_connected"):
            assert key in vm.timings
        assert vm.timings["qemu_started"] <= vm.timings["agent_connected"]
        reader, writer = link.ctl
        writer.write(b"ping")
        await writer.drain()
        assert await reader.readexactly(4) == b"ping"
        assert vm.console_tail(1) == "fake kernel line 2"
        assert vm.console_tail() == "fake kernel line 1\nfake kernel line 2"
        await vm.stop()
        assert await vm.wait() != 0
        assert pid_gone(vm.pid)
        assert runtime_files(cfg) == {"console.log", "qemu.stderr"}
        await vm.stop()  # idempotent
    run(main())


def test_an_agent_without_the_vm_secret_fails_the_boot(
        cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shim checks the agent's proof too: a peer that cannot make it is not our agent."""
    monkeypatch.setenv("FAKE_QEMU_MODE", "badproof")
    with pytest.raises(VMError, match="bulkhead.ctl of VM pod-a: .*does not know the sandbox's"):
        run(QemuVM(cfg).start())
    assert runtime_files(cfg) == {"console.log", "qemu.stderr"}


def test_exit_during_boot_reports_status_stderr_and_console(
        cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "exit")
    vm = QemuVM(cfg)
    with pytest.raises(VMError) as err:
        run(vm.start())
    msg = str(err.value)
    assert "VM pod-a exited with status 3 during boot" in msg
    assert "could not load kernel 'bad'" in msg and "fake kernel line 2" in msg
    assert runtime_files(cfg) == {"console.log", "qemu.stderr"}


def test_boot_timeout_names_the_port_and_kills_qemu(
        cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    cfg.boot_timeout = 0.5
    vm = QemuVM(cfg)
    with pytest.raises(VMError, match=r"agent did not answer on virtio-serial port bulkhead\.ctl "
                                      r"within 0\.5 s (?s:.*)fake kernel line 2"):
        run(vm.start())
    assert pid_gone(vm.pid)


def test_timeout_on_data_port_only(cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang-data")
    cfg.boot_timeout = 0.5
    with pytest.raises(VMError, match=r"virtio-serial port bulkhead\.data within"):
        run(QemuVM(cfg).start())


def test_bad_magic(cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "badmagic")
    with pytest.raises(VMError, match=r"bulkhead\.(ctl|data) .*sent b'BHAGENTX'"):
        run(QemuVM(cfg).start())


def test_channel_closed_then_exit_reports_exit(cfg: VMConfig,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "close")
    with pytest.raises(VMError, match="exited with status 5 during boot"):
        run(QemuVM(cfg).start())


def test_sandbox_rejected_fails_the_vm_unless_allowed(cfg: VMConfig,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "nosandbox")
    monkeypatch.setattr(qemu_mod, "_no_sandbox", set())
    with pytest.raises(VMError, match="cannot install its seccomp filter.*allow_unfiltered_qemu"):
        run(QemuVM(cfg).start())


def test_sandbox_rejected_falls_back_when_allowed(cfg: VMConfig,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "nosandbox")
    monkeypatch.setattr(qemu_mod, "_no_sandbox", set())
    cfg = dataclasses.replace(cfg, allow_unfiltered=True)

    async def main() -> None:
        vm = QemuVM(cfg)
        await vm.start()
        assert not vm.sandboxed
        await vm.stop()
    run(main())
    assert "rejected -sandbox" in caplog.text
    assert cfg.qemu_binary in qemu_mod._no_sandbox


def test_sigterm_ignored_then_sigkill(cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "stubborn")

    async def main() -> None:
        vm = QemuVM(cfg)
        await vm.start()
        t0 = time.monotonic()
        await vm.stop(timeout=0.3)
        assert 0.3 <= time.monotonic() - t0 < 2
        assert await vm.wait() == -9
    run(main())


def test_wait_returns_guest_exit_status(cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "poweroff")

    async def main() -> int:
        vm = QemuVM(cfg)
        try:
            await vm.start()
        except VMError:
            pass  # it may power off before both magics were read; wait() is what we test
        status = await vm.wait()
        await vm.stop()
        return status
    assert run(main()) == 0


def test_missing_binary_is_named(cfg: VMConfig) -> None:
    cfg.qemu_binary = "/nonexistent/qemu-system-x86_64"
    with pytest.raises(VMError, match="/nonexistent/qemu-system-x86_64"):
        run(QemuVM(cfg).start())


@pytest.mark.parametrize("what", ["kernel", "initrd", "rootfs"])
def test_missing_guest_file_is_named(cfg: VMConfig, what: str) -> None:
    missing = cfg.state_dir / f"no-{what}"
    setattr(cfg, what, missing)
    with pytest.raises(VMError, match=f"guest {what} {missing}"):
        run(QemuVM(cfg).start())
    assert not (cfg.state_dir / "qemu.stderr").exists()  # nothing was spawned


def test_stop_before_start_and_wait_before_start(cfg: VMConfig) -> None:
    vm = QemuVM(cfg)
    run(vm.stop())
    with pytest.raises(VMError, match="before QEMU was started"):
        run(vm.wait())


def test_start_twice_is_refused(cfg: VMConfig) -> None:
    async def main() -> None:
        vm = QemuVM(cfg)
        await vm.start()
        try:
            with pytest.raises(VMError, match="start\\(\\) called twice"):
                await vm.start()
        finally:
            await vm.stop()
    run(main())


def test_cancelled_start_leaves_nothing(cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")

    async def main() -> None:
        vm = QemuVM(cfg)
        task = asyncio.create_task(vm.start())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert vm.pid and pid_gone(vm.pid)
    run(main())
    assert runtime_files(cfg) == {"console.log", "qemu.stderr"}


def test_qemu_dies_with_the_shim(cfg: VMConfig, tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a shim killed with SIGKILL takes its QEMU along."""
    script = (
        "import asyncio, os, sys\n"
        "from pathlib import Path\n"
        "from bulkhead.event_loop import run\n"
        "from bulkhead.vmm.base import VMConfig\n"
        "from bulkhead.vmm.qemu import QemuVM\n"
        "async def main():\n"
        f"    vm = QemuVM(VMConfig(**{cfg.__dict__!r}))\n"
        "    await vm.start()\n"
        "    print(vm.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "run(main())\n")
    env = dict(os.environ, PYTHONPATH=TREE_PATH)
    shim = subprocess.Popen([sys.executable, "-c", f"from pathlib import PosixPath\n{script}"],
                            stdout=subprocess.PIPE, env=env)
    assert shim.stdout is not None
    qemu_pid = int(shim.stdout.readline())
    assert not pid_gone(qemu_pid)
    shim.kill()
    shim.wait()
    deadline = time.monotonic() + 5
    while not pid_gone(qemu_pid):
        assert time.monotonic() < deadline, "QEMU outlived the shim"
        time.sleep(0.01)


def test_stop_during_start_prevents_the_spawn(cfg: VMConfig,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() while start() still decides (e.g. a KVM probe): no QEMU is spawned afterwards."""
    gate = asyncio.Event()

    async def slow_choose(config: VMConfig) -> tuple[str, str]:
        await gate.wait()
        return "tcg", "test"

    monkeypatch.setattr(qemu_mod, "choose_accel", slow_choose)

    async def main() -> None:
        vm = QemuVM(cfg)
        task = asyncio.create_task(vm.start())
        await asyncio.sleep(0.05)
        await vm.stop()
        gate.set()
        with pytest.raises(VMError, match="stopped while starting"):
            await task
        assert vm.pid == 0
    run(main())
    assert not (cfg.state_dir / "qemu.stderr").exists()


def test_guest_fatal_is_the_reason(cfg: VMConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest init powers off (status 0) on fatal errors; its FATAL line leads the message."""
    monkeypatch.setenv("FAKE_QEMU_MODE", "fatal")
    with pytest.raises(VMError, match=r"exited with status 0 during boot: bulkhead-init: FATAL "
                                      r"mount /dev/vda \(erofs\) on /newroot \(stderr: empty;"):
        run(QemuVM(cfg).start())
