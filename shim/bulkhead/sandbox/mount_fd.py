"""Mounts made and removed through file descriptors, never through a path the guest can change.

The share is writable by the guest, so a path inside it may be a symlink by the time the host
uses it. Every operation here starts from a directory fd and one name (opened with O_NOFOLLOW),
mounts through the new mount API (fsopen/fsmount, open_tree, mount_setattr, move_mount) or on
the /proc/self/fd magic link of a safely opened fd, and unmounts the mount an fd holds.
"""

from __future__ import annotations

import errno
import os

from bulkhead.libc import libc
from bulkhead.private_files import write_all

# Syscall numbers of the new mount API: since Linux 5.1 new syscalls share one number on every
# architecture (mount_setattr: 5.12).
_OPEN_TREE, _MOVE_MOUNT, _FSOPEN, _FSCONFIG, _FSMOUNT, _MOUNT_SETATTR = (
    428, 429, 430, 431, 432, 442)
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8
# Host mounts in the share never honour setuid bits or device nodes a guest made.
SAFE_ATTRS = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FdMountError(OSError):
    """A mount operation through an fd failed; the message names what it was for."""


def _check(rc: int, what: str) -> int:
    """Raise FdMountError naming what failed when a syscall returned -1."""
    if rc < 0:
        import ctypes

        err = ctypes.get_errno()
        raise FdMountError(err, f"{what}: {os.strerror(err)}")
    return rc


def fs_mount(fstype: str, options: dict[str, str | None], attrs: int, what: str) -> int:
    """A new, still detached filesystem mount (fsopen, fsconfig, fsmount); returns its fd."""
    lib = libc()
    fs = _check(lib.syscall(_FSOPEN, fstype.encode(), FSOPEN_CLOEXEC), f"{what}: fsopen")
    try:
        for key, value in options.items():
            if value is None:
                rc = lib.syscall(_FSCONFIG, fs, FSCONFIG_SET_FLAG, key.encode(), None, 0)
            else:
                rc = lib.syscall(_FSCONFIG, fs, FSCONFIG_SET_STRING, key.encode(),
                                  value.encode(), 0)
            _check(rc, f"{what}: option {key}")
        _check(lib.syscall(_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0),
               f"{what}: create")
        return _check(lib.syscall(_FSMOUNT, fs, FSMOUNT_CLOEXEC, attrs), f"{what}: fsmount")
    finally:
        os.close(fs)


def clone_tree(source: str, recursive: bool, what: str) -> int:
    """A detached copy of the mount at source (a bind mount not attached yet); returns its fd.

    source is a host path from containerd or the spec, resolved as runc resolves it."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(libc().syscall(_OPEN_TREE, AT_FDCWD, source.encode(), flags),
                  f"{what}: open_tree {source}")


def set_attrs(tree_fd: int, attrs: int, recursive: bool, what: str) -> None:
    """mount_setattr on a mount fd: with recursive, every mount below it gets attrs too."""
    import ctypes

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(attrs, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(libc().syscall(_MOUNT_SETATTR, tree_fd, b"", flags, ctypes.byref(attr),
                           ctypes.sizeof(attr)), f"{what}: mount_setattr")


def attach(tree_fd: int, target_fd: int, what: str) -> None:
    """move_mount a detached mount onto the file or directory target_fd holds."""
    _check(libc().syscall(_MOVE_MOUNT, tree_fd, b"", target_fd, b"",
                           MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
           f"{what}: move_mount")


def mount_on(target_fd: int, source: str, fstype: str, flags: int, data: str, what: str
             ) -> None:
    """Classic mount(2) onto what target_fd holds (its /proc/self/fd link, never a path)."""
    import ctypes

    rc = libc().mount(source.encode(), f"/proc/self/fd/{target_fd}".encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None)
    _check(rc, f"{what}: mount {fstype or 'bind'} {source} (options {data!r})")


def detach(mount_fd: int, what: str) -> None:
    """Lazily unmount the mount whose root mount_fd holds, with every mount below it."""
    rc = libc().umount2(f"/proc/self/fd/{mount_fd}".encode(), MNT_DETACH)
    _check(rc, f"{what}: umount")


def detach_path(path: str) -> bool:
    """Lazily unmount the mount at path without following its last component.

    Only for paths whose parents the guest cannot change (a sandbox's state dir and the names
    in it). False when nothing is mounted there."""
    import ctypes

    if libc().umount2(path.encode(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # not a mount point (or a symlink), or gone
        return False
    raise FdMountError(err, f"umount {path}: {os.strerror(err)}")


def mount_id(fd: int) -> int:
    """The id of the mount an fd lies on (/proc/self/fdinfo), as mountinfo lists it."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "mnt_id":
                return int(value)
    raise FdMountError(0, f"fd {fd}: no mnt_id in /proc/self/fdinfo")


def make_dir(dir_fd: int, name: str, mode: int = 0o755) -> int:
    """mkdirat a new directory (never an existing one) and return an O_PATH fd of it."""
    os.mkdir(name, mode, dir_fd=dir_fd)
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def make_file(dir_fd: int, name: str, mode: int = 0o644) -> int:
    """Create a new empty regular file (never an existing name) and return an O_PATH fd."""
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=dir_fd))
    return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def write_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Write a file atomically next to dir_fd's other entries (temp name, then rename over)."""
    tmp = f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=dir_fd)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
