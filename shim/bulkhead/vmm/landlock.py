"""Landlock through ctypes (Python has no binding): a ruleset built in the parent, applied in
the forked child before exec, where it can never be lifted.

Landlock checks every open against where the file really is (walking up from it, across
mounts), so neither `..` from a directory fd nor a symlink reaches outside the allowed trees.
"""

from __future__ import annotations

import ctypes
import os
import stat
from dataclasses import dataclass
from typing import Any

from bulkhead.libc import libc

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
MAKE_SYM, REFER, TRUNCATE, IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # what a file rule may hold
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

# Filesystem rights each ABI version knows (v4 adds TCP, v6 scopes; v7 adds only audit flags).
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}

READ_TREE = EXECUTE | READ_FILE | READ_DIR
DEVICE = READ_FILE | WRITE_FILE | IOCTL_DEV
# A tree QEMU serves over 9p: everything but device nodes and executing.
SHARE_TREE = (WRITE_FILE | READ_FILE | READ_DIR | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG
              | MAKE_SOCK | MAKE_FIFO | MAKE_SYM | REFER | TRUNCATE)


class LandlockError(OSError):
    """The kernel refused to build or apply a ruleset; the message names the step."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall(*args: Any) -> int:
    return int(libc().syscall(*args))


@dataclass(frozen=True)
class Rule:
    """Allow `access` on path (and beneath it, if it is a directory)."""

    path: str
    access: int


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is missing or disabled."""
    version = _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def handled_fs(abi: int) -> int:
    """Every filesystem right this ABI can restrict (all of them are restricted)."""
    return next(bits for version, bits in sorted(_FS_BY_ABI.items(), reverse=True)
                if abi >= version)


def build_ruleset(rules: list[Rule], abi: int) -> int:
    """A ruleset fd (close-on-exec) denying every right but those the rules allow, TCP
    included and, from ABI 6, signals and abstract unix sockets beyond the process."""
    fs = handled_fs(abi)
    attr = _RulesetAttr(fs, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = int(_syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                      ctypes.c_uint32(0)))
    if fd < 0:
        raise LandlockError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for rule in rules:
            _add_rule(fd, rule, fs)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _add_rule(ruleset: int, rule: Rule, fs: int) -> None:
    target = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
    try:
        access = rule.access & fs
        if not stat.S_ISDIR(os.fstat(target).st_mode):
            access &= FILE_RIGHTS
        attr = _PathBeneathAttr(access, target)
        if _syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                    ctypes.byref(attr), ctypes.c_uint32(0)) != 0:
            raise LandlockError(ctypes.get_errno(), f"landlock_add_rule for {rule.path}")
    finally:
        os.close(target)


def restrict_self(ruleset: int) -> None:
    """Apply the ruleset to this process and what it execs (needs no_new_privs first)."""
    if _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
        raise LandlockError(ctypes.get_errno(), "landlock_restrict_self")
