"""Guest image builder: the newc cpio writer the initramfs is made with."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from guestimage.initrd import Cpio


def read_newc(data: bytes) -> list[dict[str, object]]:
    """Entries of a newc archive, up to and including the trailer (an independent reader)."""
    entries: list[dict[str, object]] = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _dmaj, _dmin, rmaj, rmin, namesize, check = f
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        assert data[pos + 110 + namesize - 1] == 0
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        entries.append({"name": name, "ino": ino, "mode": mode, "uid": uid, "gid": gid,
                        "nlink": nlink, "mtime": mtime, "data": body, "rdev": (rmaj, rmin),
                        "check": check})
        if name == "TRAILER!!!":
            assert pos == len(data)
            return entries


def sample() -> bytes:
    c = Cpio()
    c.dir("bin")
    c.file("bin/busybox", b"\x7fELF" + b"x" * 5, 0o755)
    c.symlink("bin/sh", "busybox")
    c.chardev("dev/console", 5, 1)
    c.file("init", b"#!/bin/sh\n", 0o755)
    c.file("empty", b"")
    return c.finish()


def test_entries_round_trip() -> None:
    data = sample()
    assert len(data) % 4 == 0
    entries = read_newc(data)
    assert [e["name"] for e in entries] == ["bin", "bin/busybox", "bin/sh", "dev/console",
                                            "init", "empty", "TRAILER!!!"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["bin"]["mode"] == stat.S_IFDIR | 0o755
    assert by_name["bin/busybox"]["mode"] == stat.S_IFREG | 0o755
    assert by_name["bin/busybox"]["data"] == b"\x7fELFxxxxx"
    assert by_name["bin/sh"]["mode"] == stat.S_IFLNK | 0o777
    assert by_name["bin/sh"]["data"] == b"busybox"
    assert by_name["dev/console"]["mode"] == stat.S_IFCHR | 0o600
    assert by_name["dev/console"]["rdev"] == (5, 1)
    assert by_name["empty"]["data"] == b""
    # Reproducible: root-owned, mtime 0, inodes numbered in order, no checksums.
    assert [e["ino"] for e in entries] == list(range(1, 8))
    assert {(e["uid"], e["gid"], e["mtime"], e["nlink"], e["check"]) for e in entries} == {
        (0, 0, 0, 1, 0)
    }


def test_same_entries_same_bytes() -> None:
    assert sample() == sample()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_gnu_cpio_reads_it(tmp_path: Path) -> None:
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=sample(), capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == ["bin", "bin/busybox", "bin/sh", "dev/console", "init", "empty"]
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames",
                    "--no-preserve-owner", "bin/*", "init"], input=sample(), cwd=tmp_path,
                   check=True)
    assert (tmp_path / "bin/busybox").read_bytes() == b"\x7fELFxxxxx"
    assert (tmp_path / "bin/sh").readlink() == Path("busybox")
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755
