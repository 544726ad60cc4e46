"""`bulkhead demo`: run one container through containerd with the Bulkhead runtime and show that
it ran in a guest kernel, with the shim's boot-phase timings.

    python3 -m bulkhead.devenv.demo [--runtime R] [--system-containerd] [--containerd V]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bulkhead.devenv.containerd import (
    INSTALLS,
    SYSTEM_ADDRESS,
    ContainerdError,
    CtrClient,
    PrivateContainerd,
)

BULKHEAD_RUNTIME = "io.containerd.bulkhead.v2"
DEFAULT_VERSION = "1.6"  # the private containerd the demo starts unless told otherwise
DEMO_IMAGE = "docker.io/bulkhead/demo:latest"
DEMO_IMAGE_TAR = Path("/usr/local/share/bulkhead/demo-image.tar")
BOOT_PHASES_MARKER = "boot phases"
DEMO_SCRIPT = (
    'echo "hello from the guest: kernel $(uname -r)"; '
    'echo "guest sees $(nproc) cpu(s) and $(awk \'/MemTotal/ {print $2}\' /proc/meminfo) kB"'
)


@dataclass
class DemoResult:
    """What one demo run produced; printed by run_demo, returned for tests and the CLI."""

    exit_status: int
    stdout: str
    stderr: str
    seconds: float
    boot_phases: str | None = None
    log_tail: str = ""


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


def find_boot_phases(log_text: str) -> str | None:
    """The last shim log line carrying the boot-phase timings, without logrus decoration."""
    lines = [line for line in log_text.splitlines() if BOOT_PHASES_MARKER in line]
    if not lines:
        return None
    line = lines[-1]
    text = line[line.find(BOOT_PHASES_MARKER):]
    end = text.find('" ')  # the closing quote of logrus' msg="..."
    return (text[:end] if end >= 0 else text.rstrip('"')).replace('\\"', '"')


def run_container(client: CtrClient, runtime: str, timeout: float) -> DemoResult:
    """`ctr run --rm` the demo image once with the given runtime; measures the wall time."""
    container_id = f"bulkhead-demo-{secrets.token_hex(4)}"
    start = time.monotonic()
    res = client.ctr(
        "run", "--runtime", runtime, "--rm", DEMO_IMAGE, container_id, "sh", "-c", DEMO_SCRIPT,
        check=False, timeout=timeout,
    )
    return DemoResult(res.returncode, res.stdout, res.stderr, time.monotonic() - start)


def system_containerd_log(since: float) -> str:
    """The system containerd's journal since a time, where journald is available."""
    if shutil.which("journalctl") is None:
        return ""
    res = subprocess.run(
        ["journalctl", "-u", "containerd", "--no-pager", "-o", "cat", f"--since=@{int(since)}"],
        capture_output=True, text=True, check=False,
    )
    return res.stdout


def report(out: TextIO, result: DemoResult, runtime: str) -> None:
    """Print what the guest said next to the host's kernel, and the boot phases."""
    for line in result.stdout.splitlines():
        _say(out, f"  container: {line}")
    _say(out, f"  host:      kernel {os.uname().release}")
    _say(out, f"ctr run exited with status {result.exit_status} after {result.seconds:.2f} s")
    if result.exit_status != 0 and result.stderr.strip():
        _say(out, "ctr stderr:\n" + result.stderr.strip())
    if result.exit_status != 0 and result.log_tail:
        _say(out, "containerd log tail:\n" + result.log_tail)
    if result.boot_phases:
        _say(out, result.boot_phases)
    else:
        _say(out, f"no '{BOOT_PHASES_MARKER}' line in the containerd log (runtime {runtime})")


def _demo_private(
    out: TextIO, runtime: str, version: str, image_tar: Path, timeout: float
) -> DemoResult:
    name = f"demo-{secrets.token_hex(3)}"
    with PrivateContainerd(name=name, version=version, namespace="bulkhead-demo") as ctrd:
        exact = ctrd.install.exact_version()
        _say(out, f"bulkhead demo: private containerd {exact} at {ctrd.address}, runtime {runtime}")
        ctrd.import_image(image_tar)
        result = run_container(ctrd, runtime, timeout)
        result.boot_phases = find_boot_phases(ctrd.log_text())
        if result.exit_status != 0:
            result.log_tail = ctrd.log_tail(20)
    return result


def _demo_system(out: TextIO, runtime: str, image_tar: Path, timeout: float) -> DemoResult:
    if not SYSTEM_ADDRESS.is_socket():
        raise ContainerdError(f"no system containerd socket at {SYSTEM_ADDRESS}")
    client = CtrClient(INSTALLS["1.6"].ctr, SYSTEM_ADDRESS, namespace="bulkhead-demo")
    _say(out, f"bulkhead demo: system containerd at {SYSTEM_ADDRESS}, runtime {runtime}")
    since = time.time()
    client.import_image(image_tar)
    result = run_container(client, runtime, timeout)
    result.boot_phases = find_boot_phases(system_containerd_log(since))
    return result


def run_demo(
    use_system_containerd: bool,
    runtime: str = BULKHEAD_RUNTIME,
    containerd_version: str = DEFAULT_VERSION,
    image_tar: Path = DEMO_IMAGE_TAR,
    timeout: float = 120.0,
    out: TextIO | None = None,
) -> int:
    """Run the demo end to end and clean up; returns ctr's exit status (0 = success)."""
    out = out or sys.stdout
    if not image_tar.is_file():
        _say(out, f"demo image {image_tar} is missing: run `make install`")
        return 2
    try:
        if use_system_containerd:
            result = _demo_system(out, runtime, image_tar, timeout)
        else:
            result = _demo_private(out, runtime, containerd_version, image_tar, timeout)
    except ContainerdError as exc:
        _say(out, f"bulkhead demo failed: {exc}")
        return 1
    report(out, result, runtime)
    return result.exit_status


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The demo's options; the `bulkhead demo` sub-command can reuse this on its sub-parser."""
    p = parser or argparse.ArgumentParser(prog="bulkhead demo", description=__doc__.split("\n")[0])
    p.add_argument("--runtime", default=BULKHEAD_RUNTIME, help=f"default {BULKHEAD_RUNTIME}")
    p.add_argument("--system-containerd", action="store_true",
                   help=f"use the system containerd at {SYSTEM_ADDRESS} instead of a private one")
    p.add_argument("--containerd", "--containerd-version", dest="containerd_version",
                   default=DEFAULT_VERSION, choices=sorted(INSTALLS),
                   help=f"version of the private containerd (default {DEFAULT_VERSION})")
    p.add_argument("--image", type=Path, default=DEMO_IMAGE_TAR, help=f"default {DEMO_IMAGE_TAR}")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for `ctr run`")
    return p


def run_from_args(args: argparse.Namespace) -> int:
    """Run the demo as parsed by build_parser (here or on the `bulkhead demo` sub-parser)."""
    return run_demo(
        use_system_containerd=args.system_containerd,
        runtime=args.runtime,
        containerd_version=args.containerd_version,
        image_tar=args.image,
        timeout=args.timeout,
    )


run = run_from_args  # the `bulkhead` command's sub-command interface


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
