"""The step every build runs: stage the root with our code, make the rootfs, initrd and manifest,
and put OUT in place atomically."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from pathlib import Path

from guestimage.bytecode import check_bytecode, compile_bytecode
from guestimage.copyengine import check_copyengine, install_copyengine
from guestimage.elf import check_shared_libs
from guestimage.files import du, link_or_copy, rmtree
from guestimage.initrd import build_initrd
from guestimage.inputs import Inputs
from guestimage.layers import ensure_layers, prune_layers
from guestimage.layout import AGENT_IGNORED_SUFFIXES, AGENT_SOURCES, GUEST_PYTHONPATH
from guestimage.manifest import write_manifest
from guestimage.rootfs import make_rootfs
from guestimage.steps import BuildError, log, run


def copy_agent_sources(dest: Path) -> None:
    """Copy our packages (whatever is in them now) into the image's python path."""
    ignore = shutil.ignore_patterns("__pycache__", *(f"*{s}" for s in AGENT_IGNORED_SUFFIXES))
    for name, src in AGENT_SOURCES.items():
        if not src.is_dir():
            raise BuildError(f"agent layer: source directory {src} does not exist")
        shutil.copytree(
            src,
            dest / name,
            symlinks=True,
            ignore=ignore,
        )


def stage_root(base: Path, wheels: Path, engine: Path, stage: Path) -> dict[str, str]:
    """Hard-link copy of the Debian root plus the wheels, our code compiled into it and the
    copy engine next to it, checked; returns what the manifest says of the copy engine."""
    root = base / "root"
    run("stage root", ["cp", "-a", "--link", str(root), str(stage)])
    pydir = stage / GUEST_PYTHONPATH
    run("stage wheels", ["cp", "-a", "--link", f"{wheels}/tree/.", str(pydir)])
    copy_agent_sources(pydir)
    for name in AGENT_SOURCES:
        compile_bytecode(root, pydir / name, f"/{GUEST_PYTHONPATH}/{name}", f"compile {name}")
        check_bytecode(pydir / name)
    engine_info = install_copyengine(engine, pydir)
    check_shared_libs(stage)
    engine_info["cffi_backend"] = check_copyengine(stage)
    return engine_info


def uuid_from_hash(digest: str) -> str:
    """A stable version-4-shaped UUID derived from a hex digest (reproducible images)."""
    d = digest
    return f"{d[:8]}-{d[8:12]}-4{d[13:16]}-8{d[17:20]}-{d[20:32]}"


def swap_into_place(new: Path, out: Path) -> None:
    """Atomically replace directory out by new (renameat2 RENAME_EXCHANGE, else two renames)."""
    if not out.exists():
        os.rename(new, out)
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, bytes(new), at_fdcwd, bytes(out), rename_exchange) == 0:
            rmtree(new)  # now holds the old contents
            return
    except (AttributeError, OSError):
        pass
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    os.rename(new, out)
    rmtree(old)


def install_output(result: Path, out: Path) -> None:
    """Move the finished image directory into place as OUT, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    new = result
    if os.stat(result).st_dev != os.stat(out.parent).st_dev:
        new = out.parent / f".{out.name}.new-{os.getpid()}"
        shutil.copytree(result, new)
    try:
        os.chmod(new, 0o755)
        swap_into_place(new, out)
    finally:
        if new != result:
            rmtree(new)


def build(out: Path, cache: Path, inputs: Inputs) -> None:
    """Build every missing layer and assemble OUT."""
    tmp_root = cache / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    base, kern, wheels, engine = ensure_layers(cache, inputs, tmp_root)
    log("agent layer: staging root, copying agent sources, compiling them, checking the engine")
    work = Path(tempfile.mkdtemp(prefix="final-", dir=tmp_root))
    try:
        stage, result = work / "root", work / "out"
        result.mkdir()
        engine_info = stage_root(base, wheels, engine, stage)
        rootfs_name = f"rootfs.{inputs.fstype}"
        log(f"making {rootfs_name}")
        uuid = uuid_from_hash(inputs.input_hash)
        make_rootfs(stage, result / rootfs_name, inputs.fstype, inputs.erofs_compression, uuid)
        busybox = base / "root/usr/bin/busybox"
        initrd = build_initrd(kern, busybox, inputs.fstype, inputs.initrd_compression)
        (result / "initrd.img").write_bytes(initrd)
        for kernel_file in ("vmlinuz", "vmlinux"):
            if (kern / kernel_file).exists():
                link_or_copy(kern / kernel_file, result / kernel_file)
        kinfo = json.loads((kern / "kernel.json").read_text())
        wheel_list = json.loads((wheels / "wheels.json").read_text())
        pyver = (base / "python-version").read_text()
        write_manifest(
            result, inputs, kinfo, wheel_list, engine_info, pyver, rootfs_name, du(stage)
        )
        install_output(result, out)
    finally:
        rmtree(work)
    prune_layers(cache, {base, kern, wheels, engine})
