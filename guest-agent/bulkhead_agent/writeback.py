"""Write a container's guest-side writable layer back into its snapshot on the host.

The layer is an overlayfs upper directory in guest memory; the target is the container's
rootfs on the coherent share mount (the host's overlay of containerd's snapshot), so deleting
a name there makes the host's own whiteout. Each pass writes what changed since the last one,
known from a manifest of what it wrote (a stamp per upper entry), and removes what the
container removed. The upper is the container's to change at any time, so it is read only
through directory fds and O_NOFOLLOW: a name swapped for a symlink never leads the agent out.
Blocking file I/O: run a pass in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import stat
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

OPAQUE_XATTR = "trusted.overlay.opaque"
SKIPPED_XATTR_PREFIX = "trusted.overlay."  # overlayfs's own bookkeeping in the upper
CHUNK = 1 << 20
DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
Stamp = tuple[int, ...]
WHITEOUT: Stamp = (-1,)
FAILED: Stamp = (-2,)  # never equal to a real stamp: the next pass writes the entry again


@dataclass
class PassStats:
    """What one pass did, for the log and the tests."""

    written: int = 0  # entries created or replaced in the target
    removed: int = 0  # names removed from the target
    bytes: int = 0
    failed: list[str] = field(default_factory=list)  # "path: error", retried next pass


@dataclass
class Writeback:
    """The upper → target mirror of one container, with what the last pass wrote."""

    upper: str
    target: str
    manifest: dict[str, Stamp] = field(default_factory=dict)

    def run(self) -> PassStats:
        """One pass: the target then holds what the upper held while it was walked."""
        stats = PassStats()
        seen: dict[str, Stamp] = {}
        root = os.open(self.upper, DIR_OPEN)
        try:
            _Pass(self, stats, seen).walk(root, "")
        finally:
            os.close(root)
        for rel in sorted(set(self.manifest) - set(seen), key=lambda p: p.count("/")):
            if _remove(os.path.join(self.target, rel)):
                stats.removed += 1
        self.manifest = seen
        return stats


@dataclass
class _Pass:
    """The walk of one pass (top-down, so a directory exists in the target before its names)."""

    wb: Writeback
    stats: PassStats
    seen: dict[str, Stamp]
    links: dict[int, str] = field(default_factory=dict)  # inode → first path of this pass

    def walk(self, dir_fd: int, rel: str) -> None:
        """Mirror every entry of the upper directory dir_fd (at rel) into the target."""
        with os.scandir(dir_fd) as it:
            entries = list(it)
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
                self.entry(dir_fd, entry.name, path, st)
            except OSError as exc:
                self.stats.failed.append(f"{path}: {exc.strerror or exc}")
                self.keep(path)

    def keep(self, path: str) -> None:
        """After a failure: what the last pass wrote at and below path stays (and is retried
        next pass), neither rewritten from a half-read state nor removed."""
        if path in self.wb.manifest:
            self.seen[path] = FAILED
        prefix = path + "/"
        for rel, stamp in self.wb.manifest.items():
            if rel.startswith(prefix):
                self.seen.setdefault(rel, stamp)

    def entry(self, dir_fd: int, name: str, path: str, st: os.stat_result) -> None:
        """One upper entry: a whiteout, a directory (then its names), or a leaf."""
        old = self.wb.manifest.get(path)
        target = os.path.join(self.wb.target, path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            if old != WHITEOUT and _remove(target):
                self.stats.removed += 1
            self.seen[path] = WHITEOUT
            return
        if stat.S_ISDIR(st.st_mode):
            self.directory(dir_fd, name, path, st, old, target)
            return
        if stat.S_ISSOCK(st.st_mode):
            return  # a socket is no content (as in containerd's diffs)
        stamp = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                 st.st_ctime_ns, st.st_ino)
        first = self.links.get(st.st_ino) if st.st_nlink > 1 else None
        if st.st_nlink > 1 and first is None:
            self.links[st.st_ino] = path
        if stamp != old:
            self.stats.bytes += _write_leaf(dir_fd, name, st, target,
                                            os.path.join(self.wb.target, first) if first else "")
            self.stats.written += 1
        self.seen[path] = stamp

    def directory(self, dir_fd: int, name: str, path: str, st: os.stat_result,
                  old: Stamp | None, target: str) -> None:
        """Make (or, when it became opaque, remake) the directory, then walk it."""
        fd = os.open(name, DIR_OPEN, dir_fd=dir_fd)
        try:
            opaque = int(_xattr(fd, OPAQUE_XATTR) == b"y")
            stamp = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ino, opaque)
            changed = stamp != old
            if changed:
                was_opaque = old is not None and len(old) == 6 and old[5] == 1
                if opaque and not was_opaque or old is not None and len(old) != 6:
                    _remove(target)  # an opaque directory hides all the lower one held
                _ensure_dir(target, st.st_mode)
                _copy_meta(fd, target, st)
                self.stats.written += 1
            self.seen[path] = stamp
            self.walk(fd, path)
            if changed:
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)


def _write_leaf(dir_fd: int, name: str, st: os.stat_result, target: str, link_to: str) -> int:
    """Replace target by a copy of the upper's file, symlink, fifo or device (a hard link to
    link_to when that is the same upper inode); returns the bytes copied."""
    parent, base = os.path.split(target)
    tmp = os.path.join(parent, f".bulkhead-{secrets.token_hex(6)}")
    copied = 0
    try:
        if link_to:
            os.link(link_to, tmp, follow_symlinks=False)
        elif stat.S_ISREG(st.st_mode):
            copied = _copy_file(dir_fd, name, tmp, st)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=dir_fd), tmp)
            os.chown(tmp, st.st_uid, st.st_gid, follow_symlinks=False)
        elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.mknod(tmp, st.st_mode, st.st_rdev)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        else:
            return 0
        _replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return copied


def _copy_file(dir_fd: int, name: str, tmp: str, st: os.stat_result) -> int:
    """Copy content, owner, mode, extended attributes and times into a new file tmp."""
    src = os.open(name, FILE_OPEN, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise OSError(errno.EAGAIN, f"{name} changed type while being written back")
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            copied = 0
            while chunk := os.read(src, CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
                copied += len(chunk)
            _copy_xattrs(src, dst)
            os.fchown(dst, st.st_uid, st.st_gid)
            os.fchmod(dst, stat.S_IMODE(st.st_mode))  # after chown, which clears set-id bits
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            return copied
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_meta(src_fd: int, target: str, st: os.stat_result) -> None:
    """Owner, mode and extended attributes of a directory."""
    fd = os.open(target, DIR_OPEN)
    try:
        _copy_xattrs(src_fd, fd)
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)


def _copy_xattrs(src: int, dst: int) -> None:
    """Every extended attribute but overlayfs's own (file capabilities among them)."""
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for attr in names:
        if not attr.startswith(SKIPPED_XATTR_PREFIX):
            value = _xattr(src, attr)
            if value is not None:
                os.setxattr(dst, attr, value)


def _xattr(fd: int, attr: str) -> bytes | None:
    """An extended attribute's value, or None when it is not there."""
    try:
        return os.getxattr(fd, attr)
    except OSError:
        return None


def _ensure_dir(target: str, mode: int) -> None:
    """A directory at target, replacing whatever else is there."""
    try:
        os.mkdir(target, stat.S_IMODE(mode) | 0o700)
    except FileExistsError:
        if stat.S_ISDIR(os.lstat(target).st_mode):
            return
        _remove(target)
        os.mkdir(target, stat.S_IMODE(mode) | 0o700)


def _replace(tmp: str, target: str) -> None:
    """rename(2) tmp over target; a directory in the way is removed first."""
    try:
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise
        _remove(target)
        os.replace(tmp, target)


def _remove(target: str) -> bool:
    """Remove a name (a whole tree for a directory); False when nothing was there."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(target)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
    return True
