"""The initramfs: a newc cpio written here (no cpio tool, fixed inodes and times, so it is
reproducible) with busybox, the kernel modules in load order and /init."""

from __future__ import annotations

import gzip
import json
import stat
from pathlib import Path

from guestimage.layout import GUEST, ROOT_DEV
from guestimage.rootfs import busybox_applets


class Cpio:
    """Writer for the 'newc' cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.chunks.append(hdr + b"\0" * (-len(hdr) % 4))
        self.chunks.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str, perm: int = 0o755) -> None:
        """Add a directory."""
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        """Add a regular file."""
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """Add a character device node."""
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        """The archive, with its trailer."""
        self._entry("TRAILER!!!", 0)
        return b"".join(self.chunks)


def build_initrd(kernel_layer: Path, busybox: Path, fstype: str, compression: str) -> bytes:
    """The initramfs: busybox + applet links, modules in load order, the config and /init."""
    info = json.loads((kernel_layer / "kernel.json").read_text())
    c = Cpio()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys", "run", "tmp"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in sorted({Path(a).name for a in busybox_applets(busybox)} - {"busybox"}):
        c.symlink(f"bin/{applet}", "busybox")
    load = []
    for m in info["modules"]:
        c.file(
            f"lib/modules/{m['name']}.ko",
            (kernel_layer / "modules" / f"{m['name']}.ko").read_bytes(),
        )
        load.append(f"{m['name']} {'required' if m['required'] else 'optional'}\n")
    c.file("lib/modules/load.list", "".join(load).encode())
    conf = f"ROOT_FSTYPE={fstype}\nROOT_DEV={ROOT_DEV}\nKERNEL_RELEASE={info['release']}\n"
    c.file("etc/bulkhead-initrd.conf", conf.encode())
    for name in ("fstab.initramfs", "fstab.newroot"):
        c.file(f"etc/{name}", (GUEST / name).read_bytes())
    c.file("init", (GUEST / "init").read_bytes(), 0o755)
    data = c.finish()
    if compression == "gzip":
        return gzip.compress(data, compresslevel=9, mtime=0)
    return data
