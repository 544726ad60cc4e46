"""What QEMU may do as root on the host: the capability set it keeps (issue 15's jailer part).

QEMU serves the 9p share as root (security_model=passthrough), so it keeps what passthrough
needs to give files the guest's owners and modes, and nothing else: no CAP_SYS_ADMIN (mounts,
namespaces), no CAP_MKNOD (the guest can make no device nodes on the host), no CAP_SETFCAP
(no file capabilities), no CAP_SETUID/SETGID, no CAP_SYS_PTRACE or CAP_SYS_MODULE. The
bounding set is cut before exec, so QEMU cannot get the rest back, and no_new_privs is set.
"""

from __future__ import annotations

import ctypes

from bulkhead.libc import libc

CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID = 0, 1, 2, 3, 4
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_MKNOD = 12, 21, 27
# 9p passthrough: chown to the guest's ids, reach and chmod any file of the export.
SHARE_CAPS = frozenset({CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER,
                        CAP_FSETID})
OWN_TAP_CAPS = frozenset({CAP_NET_ADMIN})  # a lone container's QEMU makes its tap itself

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
_CAP_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


class CapabilityDropper:
    """Built in the parent (libc resolved, /proc read), called in the forked child before exec:
    it then only makes system calls."""

    def __init__(self, keep: frozenset[int]) -> None:
        self._prctl, self._capset = libc().prctl, libc().capset
        self.keep = keep
        self._drop = [c for c in range(last_cap() + 1) if c not in keep]
        mask = sum(1 << c for c in keep)
        self._data = (_Data * 2)(_Data(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0),
                                 _Data(mask >> 32, mask >> 32, 0))
        self._header = _Header(_CAP_VERSION_3, 0)

    def __call__(self) -> None:
        """Cut the bounding set, then the process's own sets; OSError naming the step."""
        for cap in self._drop:
            if self._prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP of capability {cap}")
        if self._capset(ctypes.byref(self._header), self._data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        if self._prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")


def qemu_caps(own_tap: bool) -> frozenset[int]:
    """The capabilities a QEMU keeps: the share's, and NET_ADMIN if it makes its own tap."""
    return SHARE_CAPS | OWN_TAP_CAPS if own_tap else SHARE_CAPS
