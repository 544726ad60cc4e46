"""Command line of packaging/build-guest-image: options, the up-to-date check, the build lock."""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
from pathlib import Path

from guestimage.assemble import build
from guestimage.inputs import collect_inputs
from guestimage.manifest import up_to_date
from guestimage.steps import BuildError, StaleIndex, elapsed, log, run

DEFAULT_OUT = Path("/usr/local/share/bulkhead/guest")
DEFAULT_CACHE = Path("/var/cache/bulkhead/guest")
DEFAULT_INITRD_COMPRESSION = "none"  # measured: see packaging/README-guest.md
DEFAULT_EROFS_COMPRESSION = "none"  # measured: see packaging/README-guest.md


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(
        description="Build the Bulkhead guest kernel, initramfs and root filesystem."
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"cache directory (default {DEFAULT_CACHE})",
    )
    ap.add_argument("--force", action="store_true", help="rebuild OUT even if it is up to date")
    ap.add_argument(
        "--rootfs-type",
        choices=("auto", "erofs", "ext4"),
        default="auto",
        help="root filesystem type (auto: erofs if mkfs.erofs exists, else ext4)",
    )
    ap.add_argument(
        "--initrd-compression",
        choices=("none", "gzip"),
        default=DEFAULT_INITRD_COMPRESSION,
        help=f"initramfs compression (default {DEFAULT_INITRD_COMPRESSION})",
    )
    ap.add_argument(
        "--erofs-compression",
        choices=("none", "lz4", "lz4hc"),
        default=DEFAULT_EROFS_COMPRESSION,
        help=f"erofs compression (default {DEFAULT_EROFS_COMPRESSION})",
    )
    return ap.parse_args(argv)


def choose_fstype(requested: str) -> str:
    """erofs when mkfs.erofs is available (or requested), else ext4."""
    if requested == "auto":
        return "erofs" if shutil.which("mkfs.erofs") else "ext4"
    tool = "mkfs.erofs" if requested == "erofs" else "mke2fs"
    if not shutil.which(tool):
        raise BuildError(f"rootfs: {tool} is not installed")
    return requested


def main(argv: list[str]) -> int:
    """Entry point: check the cache, build if needed, report."""
    args = parse_args(argv)
    out, cache = args.out.resolve(), args.cache.resolve()
    try:
        fstype = choose_fstype(args.rootfs_type)
        cache.mkdir(parents=True, exist_ok=True)
        inputs = collect_inputs(cache, fstype, args.initrd_compression, args.erofs_compression)
        if not args.force and up_to_date(out, inputs.input_hash):
            print(f"guest image in {out} is up to date (input hash {inputs.input_hash[:16]})")
            return 0
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not args.force and up_to_date(out, inputs.input_hash):
                print(f"guest image in {out} is up to date (input hash {inputs.input_hash[:16]})")
                return 0
            try:
                build(out, cache, inputs)
            except StaleIndex as e:
                log(f"{e}\nrefreshing apt's package lists and resolving again")
                run("apt-get update", ["apt-get", "update", "-q"])
                inputs = collect_inputs(
                    cache, fstype, args.initrd_compression, args.erofs_compression
                )
                build(out, cache, inputs)
    except BuildError as e:
        print(f"build-guest-image: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = ", ".join(f"{e['file']} {e['size'] / 1e6:.1f} MB" for e in manifest["files"].values())
    print(
        f"guest image built in {out} ({elapsed():.1f} s): {sizes}; "
        f"kernel {manifest['kernel']['release']}, input hash {inputs.input_hash[:16]}"
    )
    return 0
