"""Agent settings: from the kernel command line in the guest, from argv on a development host."""

from __future__ import annotations

from dataclasses import dataclass

from bulkhead_wire.guest_abi import CHANNEL_PARAM

USAGE = ("usage: python -m bulkhead_agent [--listen-unix DIR] [--crun PATH] [--crun-root DIR] "
         "[--state-dir DIR] [--debug]")


class UsageError(Exception):
    """Bad command line."""


@dataclass
class Options:
    """How the agent talks to the shim and where it keeps its state."""

    channel: str = "serial"  # serial | vsock | unix
    listen_dir: str = ""  # unix: DIR/ctl.sock and DIR/data.sock
    crun: str = "/usr/bin/crun"
    crun_root: str | None = None
    state_dir: str = "/run/bulkhead"
    log_file: str = "/run/bulkhead/agent.log"
    debug: bool = False
    pid1: bool = True
    # How a PID 1 agent that stops ends the VM: power off (needs ACPI), or reboot (with QEMU's
    # -no-reboot and reboot=t this makes the VMM exit on machines without a power-off device).
    shutdown: str = "poweroff"


def parse_cmdline(text: str, opts: Options | None = None) -> Options:
    """Apply `bulkhead.channel=`, `bulkhead.debug=` and `bulkhead.shutdown=` from /proc/cmdline."""
    opts = opts or Options()
    for word in text.split():
        key, _, value = word.partition("=")
        if key == CHANNEL_PARAM and value in ("serial", "vsock"):
            opts.channel = value
        elif key == "bulkhead.debug":
            opts.debug = value not in ("", "0", "false", "no")
        elif key == "bulkhead.shutdown" and value in ("poweroff", "reboot"):
            opts.shutdown = value
    return opts


def parse_argv(argv: list[str], opts: Options | None = None) -> Options:
    """Development flags (argparse would cost start-up time in the guest for nothing)."""
    opts = opts or Options()
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag == "--debug":
            opts.debug = True
            continue
        if flag in ("-h", "--help"):
            raise UsageError(USAGE)
        if not args:
            raise UsageError(f"{flag} needs a value\n{USAGE}")
        value = args.pop(0)
        if flag == "--listen-unix":
            opts.channel, opts.listen_dir, opts.pid1 = "unix", value, False
            opts.state_dir = value
            opts.log_file = f"{value}/agent.log"
        elif flag == "--crun":
            opts.crun = value
        elif flag == "--crun-root":
            opts.crun_root = value
        elif flag == "--state-dir":
            opts.state_dir = value
        else:
            raise UsageError(f"unknown option {flag}\n{USAGE}")
    return opts
