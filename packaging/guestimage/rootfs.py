"""The Debian root layer (unpacked, merged /usr, stripped, skeleton, compiled) and the image
file made from the final tree (erofs, or ext4 where mkfs.erofs is missing)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from guestimage.bytecode import check_bytecode, compile_bytecode, guest_python
from guestimage.debian import Package, extract_deb
from guestimage.files import du, rmtree
from guestimage.layout import GUEST, GUEST_PYTHONPATH, PYTHON, read_list
from guestimage.steps import BuildError, log, run


def merge_usr(root: Path) -> None:
    """Move /bin, /sbin, /lib* into /usr and leave symlinks (Debian's merged-/usr layout)."""
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top, usr = root / d, root / "usr" / d
        if top.is_symlink():
            continue
        if top.is_dir():
            usr.mkdir(parents=True, exist_ok=True)
            for dirpath, dirnames, filenames in os.walk(top):
                rel = Path(dirpath).relative_to(top)
                for name in dirnames + filenames:
                    src, dst = Path(dirpath) / name, usr / rel / name
                    if src.is_dir() and not src.is_symlink():
                        dst.mkdir(exist_ok=True)
                    elif dst.exists() or dst.is_symlink():
                        if not (
                            dst.is_file() and src.is_file() and src.read_bytes() == dst.read_bytes()
                        ):
                            raise BuildError(
                                f"merge /usr: {d}/{rel / name} conflicts with usr/{d}/{rel / name}"
                            )
                    else:
                        os.rename(src, dst)
            shutil.rmtree(top)
        if top.exists() or d in ("bin", "sbin", "lib", "lib64"):
            usr.mkdir(parents=True, exist_ok=True)
            top.symlink_to(f"usr/{d}")


def apply_strip(root: Path, patterns: list[str]) -> None:
    """Delete everything matching the strip.txt glob patterns."""
    for pat in patterns:
        for p in sorted(root.glob(pat), reverse=True):
            rmtree(p)


def install_skeleton(root: Path, busybox_applets: list[str]) -> None:
    """Config files, mount points and the symlinks the guest expects."""
    shutil.copytree(GUEST / "skel", root, dirs_exist_ok=True, symlinks=True)
    mount_points = "proc sys dev run tmp root mnt var/lib var/log var/cache etc/ld.so.conf.d"
    for d in [*mount_points.split(), GUEST_PYTHONPATH, "usr/local/bin", "usr/local/sbin"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    for link, target in (
        ("var/tmp", "/tmp"),
        ("var/run", "/run"),
        ("var/lock", "/run/lock"),
        ("etc/mtab", "/proc/self/mounts"),
        ("usr/bin/python3", PYTHON),
    ):
        rmtree(root / link)
        (root / link).symlink_to(target)
    # busybox applets (sh, mount, ip, ...) where Debian packages did not put a real program.
    for applet in busybox_applets:
        dest = root / applet
        if not dest.exists() and not dest.is_symlink() and dest.parent.exists():
            dest.symlink_to("/usr/bin/busybox")


def busybox_applets(busybox: Path) -> list[str]:
    """Install paths of every applet of a busybox binary, e.g. 'usr/bin/env' (merged /usr)."""
    out = run("busybox --list-full", [str(busybox), "--list-full"])
    paths = []
    for line in out.split():
        p = line.strip("/")
        if p.startswith(("bin/", "sbin/")):
            p = "usr/" + p
        paths.append(p)
    return sorted(set(paths))


def build_base_layer(
    layer: Path, pkgs: list[Package], debs: dict[str, Path], tmp_root: Path
) -> None:
    """Unpack packages into a merged-/usr root, strip it, add the skeleton, compile the stdlib."""
    log(f"Debian root layer: unpacking {len(pkgs)} packages")
    work = Path(tempfile.mkdtemp(prefix="base-", dir=tmp_root))
    try:
        root = work / "root"
        root.mkdir()
        for p in pkgs:
            extract_deb(debs[p.name], root)
        merge_usr(root)
        patterns = [r[0] for r in read_list(GUEST / "strip.txt")]
        apply_strip(root, patterns)
        busybox = root / "usr/bin/busybox"
        if not busybox.exists():
            raise BuildError("Debian root layer: busybox-static did not provide /bin/busybox")
        install_skeleton(root, busybox_applets(busybox))
        for prog in (f"usr/bin/{PYTHON}", "usr/bin/crun", "usr/bin/sh"):
            if not (root / prog).exists():
                raise BuildError(f"Debian root layer: /{prog} is missing after unpacking")
        ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
        if os.geteuid() == 0 and os.path.exists(ldconfig):
            run("ldconfig", [ldconfig, "-r", str(root)])
        log("Debian root layer: compiling the standard library with the guest python")
        compile_bytecode(root, root / "usr/lib" / PYTHON, f"/usr/lib/{PYTHON}", "compile stdlib")
        check_bytecode(root / "usr/lib" / PYTHON)
        version = guest_python(
            root, ["-c", "import sys; print(sys.version.split()[0])"], "python version"
        )
        (work / "python-version").write_text(version.strip())
        rmtree(layer)
        work.rename(layer)
    finally:
        rmtree(work)


def make_rootfs(stage: Path, out_file: Path, fstype: str, compression: str, uuid: str) -> None:
    """Create the read-only root filesystem image from the staging tree."""
    if fstype == "erofs":
        argv = ["mkfs.erofs", "--quiet", "-T0", "--all-root", f"-U{uuid}", "-x-1"]
        if compression != "none":
            argv.append(f"-z{compression}")
        run("mkfs.erofs", argv + [str(out_file), str(stage)])
    else:
        size_kib = int(du(stage) * 1.25 / 1024) + 16384
        env = dict(os.environ, E2FSPROGS_FAKE_TIME="0")
        opts = "-q -F -t ext4 -L bulkhead-root -O ^has_journal,^metadata_csum -m 0"
        argv = ["mke2fs", *opts.split(), "-E", "root_owner=0:0,lazy_itable_init=0", "-U", uuid]
        run("mke2fs", [*argv, "-d", str(stage), str(out_file), f"{size_kib}K"], env=env)
