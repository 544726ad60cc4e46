"""Runs crun subcommands and turns a failure into a CrunError carrying crun's own message."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

from bulkhead_agent.errors import CrunError, FailedPrecondition
from bulkhead_agent.reaper import ExitInfo, Reaper
from bulkhead_agent.spawn import spawn

DEFAULT_CRUN = "/usr/bin/crun"


@dataclass(frozen=True, slots=True)
class CrunResult:
    """Outcome of one crun run: shell-style exit status and what crun logged."""

    status: int
    text: str


def error_text(log_text: str, stderr_text: str) -> str:
    """crun's error message: its log lines (else its stderr), one line, warnings included."""
    for text in (log_text, stderr_text):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return "; ".join(lines)
    return ""


async def _outlive_cancellation(exited: asyncio.Future[ExitInfo]) -> ExitInfo:
    """Wait for crun even if our caller is cancelled: cleanup must not race a running crun."""
    try:
        return await asyncio.shield(exited)
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(exited)
        raise


def _read_and_remove(path: str) -> str:
    """Contents of a crun log file (which may never have been created), then delete it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ""
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return data.decode("utf-8", "replace")


class Crun:
    """Invokes the crun binary; every run has its own --log file under log_dir."""

    def __init__(self, reaper: Reaper, path: str = DEFAULT_CRUN,
                 log_dir: str = "/run/bulkhead/crun", root: str | None = None) -> None:
        self.reaper = reaper
        self.path = path
        self.log_dir = log_dir
        self.root = root
        self._serial = itertools.count(1)

    async def run(self, args: Sequence[str], stdin: int | None = None,
                  stdout: int | None = None, stderr: int | None = None,
                  check: bool = True) -> CrunResult:
        """Run `crun <global options> args...` and wait for it through the reaper.

        stdio fds default to /dev/null, except stderr, which is captured for error messages.
        Raises CrunError when check is set and crun exits non-zero.
        """
        os.makedirs(self.log_dir, exist_ok=True)
        serial = next(self._serial)
        log_path = f"{self.log_dir}/{serial}.log"
        err_path = f"{self.log_dir}/{serial}.stderr"
        argv = [self.path, f"--log={log_path}", "--log-format=text"]
        if self.root:
            argv.append(f"--root={self.root}")
        argv.extend(args)
        err_fd = None
        if stderr is None:
            err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                pid = self._spawn(argv, stdin, stdout, stderr if err_fd is None else err_fd)
            finally:
                if err_fd is not None:
                    os.close(err_fd)
            info = await _outlive_cancellation(self.reaper.watch(pid))
        finally:
            log_text = _read_and_remove(log_path)
            err_text = _read_and_remove(err_path) if err_fd is not None else ""
        text = error_text(log_text, err_text)
        if check and info.status != 0:
            raise CrunError(args[0] if args else "", info.status, text)
        return CrunResult(info.status, text)

    def _spawn(self, argv: list[str], stdin: int | None, stdout: int | None,
               stderr: int | None) -> int:
        """posix_spawn crun; a missing binary is the agent's setup problem, said plainly."""
        try:
            return spawn(self.path, argv, stdin=stdin, stdout=stdout, stderr=stderr)
        except FileNotFoundError:
            raise FailedPrecondition(f"OCI runtime {self.path} not found in the guest") from None
        except PermissionError:
            raise FailedPrecondition(f"OCI runtime {self.path} is not executable") from None
