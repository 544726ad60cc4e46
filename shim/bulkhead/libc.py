"""libc through ctypes, loaded once and on first use: the system calls Python has no wrapper
for (the new mount API, openat2, Landlock, capabilities, prctl). `delete` and `start` often
need none of them and never pay for importing ctypes."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def libc() -> Any:
    """The process's libc, errno kept for ctypes.get_errno(); syscall() returns a long."""
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib
