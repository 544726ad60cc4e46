"""The write-back of a guest writable layer (an overlayfs upper dir) into the host's snapshot.

A plain directory stands in for the host's overlay mount: what matters is that after a pass it
holds the merged view the container saw. Whiteouts are real 0:0 character devices and opaque
directories carry overlayfs's real xattr, so the test needs root (as the agent has).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from bulkhead_agent.writeback import OPAQUE_XATTR, Writeback

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts need mknod (root)")


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, 0)


@pytest.fixture
def layer(tmp_path: Path) -> tuple[Path, Path, Writeback]:
    """An upper dir and a target that holds the image's files (as the host's merged view)."""
    upper, target = tmp_path / "upper", tmp_path / "target"
    upper.mkdir()
    (target / "etc").mkdir(parents=True)
    (target / "etc" / "passwd").write_text("root:x:0:0\n")
    (target / "etc" / "motd").write_text("image motd\n")
    (target / "usr" / "share" / "doc").mkdir(parents=True)
    (target / "usr" / "share" / "doc" / "a").write_text("doc a\n")
    (target / "bin").mkdir()
    (target / "bin" / "tool").write_text("#!/bin/sh\n")
    return upper, target, Writeback(str(upper), str(target))


def test_first_pass_mirrors_new_changed_and_removed(layer: tuple[Path, Path, Writeback]) -> None:
    upper, target, wb = layer
    (upper / "etc").mkdir()
    (upper / "etc" / "passwd").write_text("root:x:0:0\napp:x:1000:1000\n")  # a copy-up
    whiteout(upper / "etc" / "motd")
    (upper / "data").mkdir(mode=0o750)
    (upper / "data" / "f").write_bytes(b"x" * 3_000_000)
    os.chown(upper / "data" / "f", 1000, 1000)
    os.chmod(upper / "data" / "f", 0o4755)
    os.setxattr(upper / "data" / "f", "user.note", b"kept")
    os.link(upper / "data" / "f", upper / "data" / "hard")
    os.symlink("../etc/passwd", upper / "data" / "link")
    os.mkfifo(upper / "data" / "fifo")
    (upper / "usr" / "share" / "doc").mkdir(parents=True)
    os.setxattr(upper / "usr" / "share" / "doc", OPAQUE_XATTR, b"y")  # rm -r, mkdir again
    (upper / "usr" / "share" / "doc" / "b").write_text("doc b\n")
    whiteout(upper / "bin")  # a directory of the image removed

    stats = wb.run()

    assert not stats.failed
    assert (target / "etc" / "passwd").read_text().endswith("app:x:1000:1000\n")
    assert not (target / "etc" / "motd").exists()
    assert not (target / "bin").exists()
    f = target / "data" / "f"
    st = f.stat()
    assert f.read_bytes() == b"x" * 3_000_000 and stats.bytes >= 3_000_000
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (1000, 1000)
    assert os.getxattr(f, "user.note") == b"kept"
    assert os.stat(target / "data" / "hard").st_ino == st.st_ino
    assert os.readlink(target / "data" / "link") == "../etc/passwd"
    assert stat.S_ISFIFO(os.lstat(target / "data" / "fifo").st_mode)
    assert stat.S_IMODE((target / "data").stat().st_mode) == 0o750
    assert sorted(os.listdir(target / "usr" / "share" / "doc")) == ["b"]
    assert OPAQUE_XATTR not in os.listxattr(target / "usr" / "share" / "doc")
    assert not [n for n in os.listdir(target / "data") if n.startswith(".bulkhead-")]


def test_later_passes_write_only_changes(layer: tuple[Path, Path, Writeback]) -> None:
    upper, target, wb = layer
    (upper / "d").mkdir()
    for i in range(20):
        (upper / "d" / str(i)).write_text(f"{i}\n")
    assert wb.run().written == 21

    again = wb.run()
    assert (again.written, again.removed) == (0, 0)

    (upper / "d" / "3").write_text("three\n")
    (upper / "d" / "4").unlink()  # no whiteout: the image never had it
    os.rename(upper / "d" / "5", upper / "d" / "five")
    stats = wb.run()
    assert (target / "d" / "3").read_text() == "three\n"
    assert not (target / "d" / "4").exists() and not (target / "d" / "5").exists()
    assert (target / "d" / "five").read_text() == "5\n"
    assert stats.removed == 2


def test_type_changes_replace_what_is_there(layer: tuple[Path, Path, Writeback]) -> None:
    upper, target, wb = layer
    (upper / "x").write_text("file\n")
    (upper / "etc").mkdir()
    (upper / "etc" / "passwd").mkdir()  # an image file replaced by a directory
    wb.run()
    assert (target / "etc" / "passwd").is_dir()

    (upper / "x").unlink()
    (upper / "x").mkdir()
    (upper / "x" / "inner").write_text("in\n")
    os.rmdir(upper / "etc" / "passwd")
    (upper / "etc" / "passwd").write_text("back to a file\n")
    wb.run()
    assert (target / "x" / "inner").read_text() == "in\n"
    assert (target / "etc" / "passwd").read_text() == "back to a file\n"

    (upper / "x" / "inner").unlink()
    os.rmdir(upper / "x")
    wb.run()
    assert not (target / "x").exists()


def test_a_symlink_swapped_into_the_upper_is_not_followed(
        layer: tuple[Path, Path, Writeback], tmp_path: Path) -> None:
    """The container controls the upper: a directory it replaces with a symlink to the
    agent's own files must not carry those files into the snapshot."""
    upper, target, wb = layer
    secret = tmp_path / "agent-secret"
    secret.mkdir()
    (secret / "key").write_text("channel key\n")
    os.symlink(secret, upper / "d")
    os.symlink(secret / "key", upper / "k")
    wb.run()
    assert os.readlink(target / "d") == str(secret)  # copied as the symlinks they are
    assert os.readlink(target / "k") == str(secret / "key")
    assert not any(p.is_file() and not p.is_symlink() and p.read_text() == "channel key\n"
                   for p in _walk(target))


def _walk(top: Path) -> list[Path]:
    """Every path under top, not following symlinks."""
    out = []
    for root, dirs, files in os.walk(top):
        out += [Path(root, n) for n in dirs + files]
    return out


def test_unreadable_entry_is_kept_and_retried(layer: tuple[Path, Path, Writeback],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    upper, target, wb = layer
    (upper / "d").mkdir()
    (upper / "d" / "a").write_text("a\n")
    wb.run()
    real_open = os.open

    def failing_open(path: str, flags: int, *args: object, **kw: object) -> int:
        if path == "d":
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing_open)
    stats = wb.run()
    assert stats.failed and (target / "d" / "a").exists()  # not removed for being unread
    monkeypatch.undo()
    (upper / "d" / "a").write_text("changed\n")
    assert not wb.run().failed
    assert (target / "d" / "a").read_text() == "changed\n"
