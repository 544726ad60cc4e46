"""`bulkhead doctor [--json] [--no-smoke] [--pods N] [--containerd-config PATH ...]
[--containerd PATH]`: run every
check in order, print each finding (or one JSON list), and exit 1 on any failure."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from bulkhead.doctor import cni, containerds, image, memory, smoke, vm
from bulkhead.doctor.context import Context, Options
from bulkhead.doctor.report import (
    Finding,
    exit_code,
    render_json,
    render_line,
    run_check,
    summary,
)

# (group, check) in the order they run: cheapest and most basic first, the smoke test last.
CHECKS: list[tuple[str, Callable[[Context], Iterator[Finding]]]] = [
    ("config", vm.check_config),
    ("qemu", vm.check_qemu),
    ("accel", vm.check_accel),
    ("vsock", vm.check_vsock),
    ("guest image", image.check_guest_image),
    ("template", image.check_templates),
    ("containerd", containerds.check_containerds),
    ("cni plugins", cni.check_plugins),
    ("cni config", cni.check_config),
    ("memory", memory.check_memory),
    ("smoke test", smoke.check_smoke),
]


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print only a JSON list of {name, status, detail, fix, duration}")
    parser.add_argument("--no-smoke", action="store_true",
                        help="skip the smoke test (a real sandbox through a private containerd)")
    parser.add_argument("--pods", type=int, default=10, metavar="N",
                        help="check memory for N more pods (default 10)")
    parser.add_argument("--containerd-config", type=Path, action="append", default=[],
                        metavar="PATH", help="also check this containerd config file "
                                             "(repeatable)")
    parser.add_argument("--containerd", metavar="PATH", default=None,
                        help="containerd binary for the smoke test's private instance (default: "
                             "`containerd` on PATH, else a development install)")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    """Run the checks; SIGTERM interrupts like Ctrl-C, so the smoke test still cleans up."""
    options = Options(pods=max(args.pods, 0), smoke=not args.no_smoke,
                      containerd_configs=list(args.containerd_config),
                      containerd=args.containerd)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    start = time.monotonic()
    findings: list[Finding] = []
    try:
        with Context.load(options) as ctx:
            for group, check in CHECKS:
                new = run_check(group, check, ctx)
                findings += new
                if not args.json:
                    for finding in new:
                        print(render_line(finding), flush=True)
    except KeyboardInterrupt:
        print("bulkhead doctor: interrupted (everything it started was removed)",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    wall = time.monotonic() - start
    if args.json:
        print(render_json(findings))
        print(summary(findings, wall), file=sys.stderr)
    else:
        print(summary(findings, wall))
    return exit_code(findings)
