"""QEMU command-line construction for both channels and both accelerators."""

from __future__ import annotations

from pathlib import Path

import pytest
from bulkhead.vmm.base import VMConfig, VMError
from bulkhead.vmm.qemu_cmdline import (
    LaunchPlan,
    build_command,
    kernel_cmdline,
    machine_args,
    qopt,
)
from bulkhead.vmm.tsc import tcg_kernel_params


def config(tmp_path: Path, **kw: object) -> VMConfig:
    """A config whose paths need not exist (build_command does not touch the filesystem)."""
    base = dict(name="pod1", state_dir=tmp_path / "st", kernel=Path("/g/vmlinuz"),
                initrd=Path("/g/initrd.img"), rootfs=Path("/g/rootfs.erofs"),
                shared_dir=tmp_path / "shared")
    base.update(kw)
    return VMConfig(**base)  # type: ignore[arg-type]


def option_values(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag`, in order."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_serial_tcg(tmp_path: Path) -> None:
    cfg = config(tmp_path, memory_mib=256, vcpus=2)
    argv = build_command(cfg, LaunchPlan(accel="tcg", channel="serial", qmp_fd=7, ctl_fd=8,
                                         data_fd=9))
    assert argv[0] == "qemu-system-x86_64"
    assert option_values(argv, "-accel") == ["tcg"]
    assert option_values(argv, "-cpu") == ["max"]
    assert option_values(argv, "-machine")[0].startswith("microvm,")
    for opt in ("x-option-roms=off", "pit=off", "pic=off", "rtc=on", "isa-serial=on"):
        assert opt in option_values(argv, "-machine")[0].split(",")
    assert option_values(argv, "-m") == ["256M"]
    assert option_values(argv, "-smp") == ["2"]
    for flag in ("-nodefaults", "-no-user-config", "-no-reboot"):
        assert flag in argv
    assert option_values(argv, "-sandbox")[0].startswith("on,")
    assert option_values(argv, "-kernel") == ["/g/vmlinuz"]
    assert option_values(argv, "-initrd") == ["/g/initrd.img"]
    append = option_values(argv, "-append")[0]
    assert append.split()[:2] == ["console=ttyS0", "quiet"]
    assert "bulkhead.channel=serial" in append.split()
    for param in tcg_kernel_params():  # TCG: the host TSC rate, when the host tells it
        assert param in append.split()
    chardevs = option_values(argv, "-chardev")
    assert f"file,id=console,path={tmp_path}/st/console.log" in chardevs
    assert "socket,id=qmp,fd=7,server=on,wait=off" in chardevs
    assert "socket,id=ctl,fd=8,server=on,wait=off" in chardevs
    assert "socket,id=data,fd=9,server=on,wait=off" in chardevs
    assert option_values(argv, "-serial") == ["chardev:console"]
    assert option_values(argv, "-mon") == ["chardev=qmp,mode=control"]
    devices = option_values(argv, "-device")
    assert "virtio-serial-device" in devices
    assert "virtserialport,chardev=ctl,name=bulkhead.ctl" in devices
    assert "virtserialport,chardev=data,name=bulkhead.data" in devices
    assert "virtio-blk-device,drive=rootfs" in devices
    assert "virtio-rng-device" in devices
    assert "virtio-9p-device,fsdev=shared,mount_tag=bulkhead" in devices
    # The same share again, for the guest's cached mount of image layers.
    assert "virtio-9p-device,fsdev=layers,mount_tag=bulkhead-layers" in devices
    assert not any(d.startswith("vhost-vsock") for d in devices)
    drive = option_values(argv, "-drive")[0].split(",")
    assert "readonly=on" in drive and "format=raw" in drive and "file=/g/rootfs.erofs" in drive
    for value in option_values(argv, "-fsdev"):
        fsdev = value.split(",")
        assert fsdev[0] == "local" and f"path={tmp_path}/shared" in fsdev
        assert "security_model=passthrough" in fsdev and "multidevs=remap" in fsdev


def test_vsock_kvm(tmp_path: Path) -> None:
    cfg = config(tmp_path, extra_cmdline="foo=1 bar")
    argv = build_command(cfg, LaunchPlan(accel="kvm", channel="vsock", qmp_fd=7, vhost_fd=11,
                                         cid=1234, key_fd=13))
    assert option_values(argv, "-accel") == ["kvm"]
    assert option_values(argv, "-cpu") == ["host"]
    devices = option_values(argv, "-device")
    assert "vhost-vsock-device,guest-cid=1234,vhostfd=11" in devices
    # virtio-serial carries only the debug port there (a null backend unless debug_shell is on)
    # and the key port: the channel secret reaches the guest through a socketpair, no path
    assert [d for d in devices if d.startswith("virtserialport")] == [
        "virtserialport,chardev=debug,name=bulkhead.debug",
        "virtserialport,chardev=key,name=bulkhead.key"]
    assert "null,id=debug" in option_values(argv, "-chardev")
    assert "socket,id=key,fd=13" in option_values(argv, "-chardev")
    assert not any(c.startswith("socket,id=ctl") for c in option_values(argv, "-chardev"))
    append = option_values(argv, "-append")[0]
    assert "bulkhead.channel=vsock" in append.split()
    assert "tsc=reliable" not in append.split()  # KVM guests have kvm-clock
    assert append.endswith(" foo=1 bar")


def test_no_sandbox_and_debug(tmp_path: Path) -> None:
    cfg = config(tmp_path, debug=True)
    argv = build_command(cfg, LaunchPlan(accel="tcg", channel="serial", qmp_fd=3, ctl_fd=4,
                                         data_fd=5, sandbox=False))
    assert "-sandbox" not in argv
    assert "quiet" not in option_values(argv, "-append")[0].split()


def test_commas_in_paths_are_escaped(tmp_path: Path) -> None:
    cfg = config(tmp_path, shared_dir=Path("/a,b/shared"), rootfs=Path("/r,x.erofs"),
                 state_dir=Path("/s,t"))
    argv = build_command(cfg, LaunchPlan(accel="tcg", channel="serial", qmp_fd=3, ctl_fd=4,
                                         data_fd=5))
    assert "path=/a,,b/shared" in option_values(argv, "-fsdev")[0]
    assert "file=/r,,x.erofs" in option_values(argv, "-drive")[0]
    assert "file,id=console,path=/s,,t/console.log" in option_values(argv, "-chardev")
    assert qopt("a,b,,c") == "a,,b,,,,c"


def test_kernel_cmdline_shape(tmp_path: Path) -> None:
    cfg = config(tmp_path, extra_cmdline="  bulkhead.probe=1 ")
    assert kernel_cmdline(cfg, "serial") == (
        "console=ttyS0 quiet panic=-1 reboot=t bulkhead.channel=serial cryptomgr.notests pci=off"
        " bulkhead.probe=1")


def test_unknown_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VMError, match="accel"):
        machine_args("hvf")
    with pytest.raises(VMError, match="channel"):
        build_command(config(tmp_path), LaunchPlan(accel="tcg", channel="tcp", qmp_fd=3))


def test_template_and_clone_command_lines(tmp_path: Path) -> None:
    """A template keeps its RAM in a shared file; a clone maps it privately, resumes, no kernel."""
    plan = LaunchPlan(accel="tcg", channel="serial", qmp_fd=3, ctl_fd=4, data_fd=5)
    template = build_command(config(tmp_path, memory_file=tmp_path / "mem", memory_shared=True,
                                    tcg_tb_mib=64), plan)
    clone = build_command(config(tmp_path, memory_file=tmp_path / "mem",
                                 restore_from=tmp_path / "state", tcg_tb_mib=64), plan)
    for argv, share in ((template, "on"), (clone, "off")):
        assert f"memory-backend-file,id=mem,size=512M,mem-path={tmp_path}/mem,share={share}" \
            in argv
        assert any(a.endswith(",memory-backend=mem") for a in argv)
        assert argv[argv.index("-accel") + 1] == "tcg,tb-size=64"
    assert "-kernel" in template and "-incoming" not in template
    assert "-kernel" not in clone and clone[-2:] == ["-incoming", "defer"]

    def devices(argv: list[str]) -> list[str]:
        return [argv[i + 1].split(",")[0] for i, a in enumerate(argv) if a == "-device"]

    assert devices(template) == devices(clone)  # the same devices in the same order
