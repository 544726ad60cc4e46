"""Agent configuration inputs: kernel command line, development argv, the init's boot marks."""

from __future__ import annotations

from pathlib import Path

import pytest
from bulkhead_agent.bootinfo import BootInfo, parse_boot_times, uptime
from bulkhead_agent.options import Options, UsageError, parse_argv, parse_cmdline


def test_boot_times_parse_and_skip_garbage() -> None:
    text = "init_start 0.93\nswitch_root 1.21\nbroken\nx notanumber\n\n"
    assert parse_boot_times(text) == {"init_start": 0.93, "switch_root": 1.21}


def test_boot_info_reads_the_init_file(tmp_path: Path) -> None:
    path = tmp_path / "boot-times"
    path.write_text("init_start 0.93\nswitch_root 1.21\n")
    assert BootInfo.collect(1.5, str(path)) == BootInfo(0.93, 1.21, 1.5)
    assert BootInfo.collect(1.5, str(tmp_path / "missing")) == BootInfo(0.0, 0.0, 1.5)


def test_uptime_matches_proc_uptime() -> None:
    with open("/proc/uptime") as f:
        proc = float(f.read().split()[0])
    assert abs(uptime() - proc) < 1.0


def test_cmdline_selects_channel_and_debug() -> None:
    opts = parse_cmdline("console=ttyS0 quiet bulkhead.channel=vsock bulkhead.debug=1 "
                         "bulkhead.shutdown=reboot")
    assert (opts.channel, opts.debug, opts.shutdown) == ("vsock", True, "reboot")
    assert parse_cmdline("bulkhead.shutdown=explode").shutdown == "poweroff"
    assert parse_cmdline("bulkhead.channel=bogus").channel == "serial"
    assert parse_cmdline("bulkhead.debug=0").debug is False


def test_argv_development_mode() -> None:
    opts = parse_argv(["--listen-unix", "/tmp/d", "--crun", "/x/crun", "--debug"])
    assert opts == Options(channel="unix", listen_dir="/tmp/d", crun="/x/crun",
                           state_dir="/tmp/d", log_file="/tmp/d/agent.log", debug=True,
                           pid1=False)


@pytest.mark.parametrize("argv", [["--crun"], ["--bogus", "x"], ["--help"]])
def test_argv_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_argv(argv)
