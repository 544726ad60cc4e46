"""`bulkhead demo`: run one container through containerd with the Bulkhead runtime and show that
it ran in a guest kernel, with the shim's boot-phase timings.

    bulkhead demo [--runtime R] [--containerd PATH | --containerd-version V] [--system-containerd]

The private containerd runs the binary given by --containerd, else the node's own `containerd`
on PATH, else a development install of `make install` (--containerd-version picks one).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from bulkhead.demo.binaries import DEV_INSTALLS, find_containerd
from bulkhead.demo.container import (
    BOOT_PHASES_MARKER,
    BULKHEAD_RUNTIME,
    DEMO_IMAGE_TAR,
    IMAGE_FIX,
    DemoResult,
    find_boot_phases,
    run_container,
)
from bulkhead.demo.ctr import DEMO_NAMESPACE, CtrClient
from bulkhead.demo.errors import ContainerdError
from bulkhead.demo.instance import PrivateContainerd
from bulkhead.demo.shared_dirs import SYSTEM_ADDRESS


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


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


def _demo_private(out: TextIO, runtime: str, containerd: str | None, version: str | None,
                  image_tar: Path, timeout: float) -> DemoResult:
    binaries = find_containerd(containerd, version)
    name = f"demo-{secrets.token_hex(3)}"
    with PrivateContainerd(name=name, binaries=binaries, namespace=DEMO_NAMESPACE) as ctrd:
        _say(out, f"bulkhead demo: private containerd {binaries.exact_version()} "
                  f"({binaries.containerd}) at {ctrd.address}, runtime {runtime}")
        ctrd.import_image(image_tar)
        result = run_container(ctrd, runtime, timeout)
        result.boot_phases = find_boot_phases(ctrd.log_text())
        if result.exit_status != 0:
            result.log_tail = ctrd.log_tail(20)
    return result


def _demo_system(out: TextIO, runtime: str, containerd: str | None, image_tar: Path,
                 timeout: float) -> DemoResult:
    if not SYSTEM_ADDRESS.is_socket():
        raise ContainerdError(f"no system containerd socket at {SYSTEM_ADDRESS}")
    client = CtrClient(find_containerd(containerd).ctr, SYSTEM_ADDRESS, namespace=DEMO_NAMESPACE)
    _say(out, f"bulkhead demo: system containerd at {SYSTEM_ADDRESS}, runtime {runtime}")
    since = time.time()
    client.import_image(image_tar)
    result = run_container(client, runtime, timeout)
    result.boot_phases = find_boot_phases(system_containerd_log(since))
    return result


def run_demo(
    use_system_containerd: bool,
    runtime: str = BULKHEAD_RUNTIME,
    containerd: str | None = None,
    containerd_version: str | None = None,
    image_tar: Path = DEMO_IMAGE_TAR,
    timeout: float = 120.0,
    out: TextIO | None = None,
) -> int:
    """Run the demo end to end and clean up; returns ctr's exit status (0 = success)."""
    out = out or sys.stdout
    if not image_tar.is_file():
        _say(out, f"demo image {image_tar} is missing: {IMAGE_FIX}, or give --image PATH")
        return 2
    try:
        if use_system_containerd:
            result = _demo_system(out, runtime, containerd, image_tar, timeout)
        else:
            result = _demo_private(out, runtime, containerd, containerd_version, image_tar,
                                   timeout)
    except ContainerdError as exc:
        _say(out, f"bulkhead demo failed: {exc}")
        return 1
    report(out, result, runtime)
    return result.exit_status


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The demo's options, on the `bulkhead demo` sub-parser (or a parser of its own)."""
    p = parser or argparse.ArgumentParser(prog="bulkhead demo",
                                          description=(__doc__ or "").split("\n")[0])
    p.add_argument("--runtime", default=BULKHEAD_RUNTIME, help=f"default {BULKHEAD_RUNTIME}")
    p.add_argument("--system-containerd", action="store_true",
                   help=f"use the system containerd at {SYSTEM_ADDRESS} instead of a private one")
    p.add_argument("--containerd", metavar="PATH", default=None,
                   help="containerd binary of the private instance (default: `containerd` on "
                        "PATH, else a development install); its ctr is the one beside it. A "
                        "version X.Y names a development install, as --containerd-version")
    p.add_argument("--containerd-version", default=None, choices=sorted(DEV_INSTALLS),
                   help="use this development install of `make install` instead")
    p.add_argument("--image", type=Path, default=DEMO_IMAGE_TAR, help=f"default {DEMO_IMAGE_TAR}")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for `ctr run`")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo as parsed by build_parser (the `bulkhead` command's sub-command interface)."""
    containerd, version = args.containerd, args.containerd_version
    if containerd in DEV_INSTALLS and not os.path.exists(containerd):
        containerd, version = None, containerd  # `--containerd 1.7`, as before --containerd PATH
    return run_demo(
        use_system_containerd=args.system_containerd,
        runtime=args.runtime,
        containerd=containerd,
        containerd_version=version,
        image_tar=args.image,
        timeout=args.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
