"""QEMU as a host process: find the binary, spawn it so that it dies with the shim, read its logs
and say its exit status. Shared by the pod VM driver and the KVM probe boot."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from bulkhead.libc import libc
from bulkhead.private_files import open_private
from bulkhead.vmm.base import STATE_DIR_ENV, VMError
from bulkhead.vmm.capabilities import CapabilityDropper, qemu_caps
from bulkhead.vmm.landlock import restrict_self

PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000


def resolve_binary(binary: str) -> Path:
    """Absolute path of the QEMU binary, or VMError naming what was looked for."""
    found = shutil.which(binary)
    if found is None:
        raise VMError(f"QEMU binary {binary!r} not found or not executable "
                      f"(PATH={os.environ.get('PATH', '')})")
    return Path(found).resolve()


# Resolved in the parent, so the forked child only calls them.
_prctl, _unshare = libc().prctl, libc().unshare


def _child_setup(parent: int, new_netns: bool, ruleset: int | None) -> Callable[[], None]:
    """preexec_fn: SIGKILL QEMU when the shim dies (even before prctl ran); optionally put it
    in a network namespace of its own, which then lives exactly as long as QEMU; then drop
    every capability QEMU does not need (vmm/capabilities.py) and confine it to its Landlock
    ruleset (vmm/qemu_jail.py)."""
    drop = CapabilityDropper(qemu_caps(own_tap=new_netns))

    def preexec() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        if new_netns and _unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        drop()  # also sets no_new_privs, which Landlock needs
        if ruleset is not None:
            restrict_self(ruleset)
    return preexec


async def spawn(argv: list[str], stderr_path: Path, pass_fds: list[int],
                new_netns: bool = False, ruleset: int | None = None
                ) -> asyncio.subprocess.Process:
    """Start QEMU with stdin /dev/null, stdout+stderr into stderr_path, tied to our lifetime;
    its environment names its state directory (stderr_path's), for is_our_qemu. `ruleset`
    (a Landlock ruleset fd) confines it from before exec."""
    env = dict(os.environ, **{STATE_DIR_ENV: str(stderr_path.parent)})
    with os.fdopen(open_private(str(stderr_path)), "wb") as err:
        try:
            return await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                pass_fds=pass_fds, preexec_fn=_child_setup(os.getpid(), new_netns, ruleset))
        except (OSError, subprocess.SubprocessError) as exc:
            raise VMError(f"spawn {argv[0]} failed: {exc}") from exc


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def file_tail(path: Path, lines: int, max_bytes: int = 65536) -> str:
    """The last lines of a log file, control characters stripped; "" if missing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            raw = f.read()
    except OSError:
        return ""
    return text_tail(raw, lines)


def text_tail(raw: bytes, lines: int) -> str:
    """The last non-blank lines of raw log bytes, escape sequences and controls stripped."""
    text = _ANSI.sub("", raw.decode(errors="replace").replace("\r", ""))
    kept = [ln.rstrip() for ln in text.split("\n") if ln.strip()]
    return "\n".join(kept[-lines:])


def describe_status(status: int) -> str:
    """Exit status in words: 'status 1' or 'signal SIGKILL'."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-status).name}"
        return f"signal {-status}"
    return f"status {status}"
