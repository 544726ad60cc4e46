"""The QEMU command line of a microvm guest: the pod VM's full argv and the pieces the KVM probe
boot shares with it (machine, console, kernel command line, root disk)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bulkhead_wire.guest_abi import (
    CHANNEL_PARAM,
    CTL_PORT_NAME,
    DATA_PORT_NAME,
    DEBUG_PORT_NAME,
    KEY_PORT_NAME,
    ROOTFS_MOUNT_TAG,
    SHARE_MOUNT_TAG,
)

from bulkhead.vmm.base import CONSOLE_LOG, OWN_NETNS_TAP, VMConfig, VMError
from bulkhead.vmm.tsc import tcg_kernel_params

SERIAL_PORTS = {"ctl": CTL_PORT_NAME, "data": DATA_PORT_NAME}  # by channel role
# Syscall filter: no obsolete calls, no set*id, no fork/exec, no scheduler/affinity changes.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
# Microvm without option ROMs, PIT and PIC (guests calibrate nothing against them: KVM guests have
# kvm-clock, TCG guests get the host TSC rate on the command line); ISA serial is the console.
MACHINE = "microvm,x-option-roms=off,pit=off,pic=off,rtc=on,isa-serial=on"
# Skip the crypto self-tests (~1 s under TCG) and the PCI probe (microvm has no PCI bus).
FAST_BOOT = ("cryptomgr.notests", "pci=off")
# Bump whenever build_command's device list or order changes: VM templates are keyed by it,
# and a clone must have exactly its template's devices.
DEVICE_SET = 5


@dataclass
class LaunchPlan:
    """The per-launch decisions and the fds QEMU inherits, for build_command()."""

    accel: str
    channel: str
    qmp_fd: int
    ctl_fd: int = -1
    data_fd: int = -1
    vhost_fd: int = -1
    cid: int = 0
    migration_fd: int = -1  # the state file QEMU reads (resume) or writes (snapshot), inherited
    console_fd: int = -1  # QEMU's end of the console ring's socket; -1: a plain file
    debug_fd: int = -1  # the listening socket of the debug port; -1: a null backend
    key_fd: int = -1  # QEMU's end of the key port's socketpair; -1: a null backend
    sandbox: bool = True
    pass_fds: list[int] = field(default_factory=list)


def qopt(value: str | Path) -> str:
    """Escape a value for a QEMU comma-separated option list."""
    return str(value).replace(",", ",,")


def machine_args(accel: str, memory_backend: bool = False, tcg_tb_mib: int = 0) -> list[str]:
    """Machine, accelerator and CPU model: the host CPU under KVM, everything TCG can do else."""
    if accel not in ("kvm", "tcg"):
        raise VMError(f"unknown accel {accel!r} (kvm or tcg)")
    machine = MACHINE + (",memory-backend=mem" if memory_backend else "")
    accel_opt = f"tcg,tb-size={tcg_tb_mib}" if accel == "tcg" and tcg_tb_mib > 0 else accel
    return ["-machine", machine, "-accel", accel_opt, "-cpu", "host" if accel == "kvm" else "max"]


def kernel_cmdline(config: VMConfig, channel: str, accel: str = "kvm") -> str:
    """The guest kernel command line: console on ttyS0, reboot = exit, the agent's channel."""
    parts = ["console=ttyS0", "panic=-1", "reboot=t", f"{CHANNEL_PARAM}={channel}", *FAST_BOOT]
    if not config.debug:
        parts.insert(1, "quiet")
    if accel == "tcg":
        parts += tcg_kernel_params()
    if config.extra_cmdline.strip():
        parts.append(config.extra_cmdline.strip())
    return " ".join(parts)


def base_args(config: VMConfig, accel: str, sandbox: bool, console_fd: int = -1) -> list[str]:
    """Options every launch shares: machine, size, no defaults, console capture."""
    args = [config.qemu_binary, "-name", f"guest={qopt('bulkhead-' + config.name)}",
            *machine_args(accel, config.memory_file is not None, config.tcg_tb_mib),
            "-m", f"{config.memory_mib}M", "-smp", str(config.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    if sandbox:
        args += ["-sandbox", SANDBOX]
    if config.memory_file is not None:
        share = "on" if config.memory_shared else "off"
        args += ["-object", f"memory-backend-file,id=mem,size={config.memory_mib}M,"
                            f"mem-path={qopt(config.memory_file)},share={share}"]
    if console_fd >= 0:  # the shim's ring (vmm/console.py)
        args += ["-chardev", f"socket,id=console,fd={console_fd}"]
    else:
        args += ["-chardev", f"file,id=console,path={qopt(config.state_dir / CONSOLE_LOG)}"]
    args += ["-serial", "chardev:console"]
    return args


def rootfs_args(config: VMConfig) -> list[str]:
    """The read-only root disk (the guest init mounts /dev/vda; the probe needs it too)."""
    return ["-drive", f"id=rootfs,file={qopt(config.rootfs)},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=rootfs"]


def build_command(config: VMConfig, plan: LaunchPlan) -> list[str]:
    """The full QEMU argv for one pod VM (booted, or resumed from a template's state).

    A resumed VM gets no -kernel: its memory already holds the kernel, and loading the image
    again would cost every VM a private copy of it (QEMU keeps it for resets).
    """
    args = base_args(config, plan.accel, plan.sandbox, plan.console_fd)
    if config.restore_from is None:
        args += ["-kernel", str(config.kernel), "-initrd", str(config.initrd),
                 "-append", kernel_cmdline(config, plan.channel, plan.accel)]
    args += ["-chardev", f"socket,id=qmp,fd={plan.qmp_fd},server=on,wait=off",
             "-mon", "chardev=qmp,mode=control"]
    args += rootfs_args(config)
    args += ["-device", "virtio-rng-device"]
    # The pod's network interface: its tap in the pod's netns, the tap QEMU makes in its own
    # netns (a lone container's), or a hub port leading nowhere.
    # The device is the same either way, so a template serves pods and lone containers.
    if config.tap_fd >= 0:
        netdev = f"tap,id=net0,fd={config.tap_fd}"
    elif config.own_netns:
        netdev = f"tap,id=net0,ifname={OWN_NETNS_TAP},script=no,downscript=no,vnet_hdr=on"
    else:
        netdev = "hubport,id=net0,hubid=0"
    args += ["-netdev", netdev, "-device", "virtio-net-device,netdev=net0"]
    # One share, two devices: the guest mounts one coherent (volumes, bundles, write-back)
    # and one with its caches on for image layers (guest_abi.ROOTFS_MOUNT_TAG).
    for fsdev, tag in (("shared", SHARE_MOUNT_TAG), ("layers", ROOTFS_MOUNT_TAG)):
        args += ["-fsdev", f"local,id={fsdev},path={qopt(config.shared_dir)},"
                           "security_model=passthrough,multidevs=remap",
                 "-device", f"virtio-9p-device,fsdev={fsdev},mount_tag={tag}"]
    args += ["-device", "virtio-serial-device"]
    debug = (f"socket,id=debug,fd={plan.debug_fd},server=on,wait=off" if plan.debug_fd >= 0
             else "null,id=debug")
    args += ["-chardev", debug, "-device", f"virtserialport,chardev=debug,name={DEBUG_PORT_NAME}"]
    key = f"socket,id=key,fd={plan.key_fd}" if plan.key_fd >= 0 else "null,id=key"
    args += ["-chardev", key, "-device", f"virtserialport,chardev=key,name={KEY_PORT_NAME}"]
    if plan.channel == "serial":
        for role, fd in (("ctl", plan.ctl_fd), ("data", plan.data_fd)):
            args += ["-chardev", f"socket,id={role},fd={fd},server=on,wait=off",
                     "-device", f"virtserialport,chardev={role},name={SERIAL_PORTS[role]}"]
    elif plan.channel == "vsock":
        vhost = f",vhostfd={plan.vhost_fd}" if plan.vhost_fd >= 0 else ""
        args += ["-device", f"vhost-vsock-device,guest-cid={plan.cid}{vhost}"]
    else:
        raise VMError(f"VM {config.name}: unknown channel {plan.channel!r} (serial or vsock)")
    if config.restore_from is not None:
        args += ["-incoming", "defer"]
    return args
