"""Starts helper programs with posix_spawn; their exits are collected by the Reaper only."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence

# Signals Python ignores for itself; a spawned program must start with the default action.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for helpers: ours, with a PATH that always finds the basics."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def spawn(path: str, argv: Sequence[str], stdin: int | None = None, stdout: int | None = None,
          stderr: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """Start `path` with the given fds as its stdio (None: /dev/null) and return its pid.

    Every other fd of the agent is close-on-exec (PEP 446), so nothing else leaks into it.
    """
    actions: list[tuple[int, int, int] | tuple[int, int, str, int, int]] = []
    temporary: list[int] = []
    try:
        for target, fd in enumerate((stdin, stdout, stderr)):
            if fd is None:
                actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_RDWR, 0))
                continue
            if fd < 3:  # dup2 onto itself would keep close-on-exec, and 0-2 may be clobbered
                fd = os.dup(fd)
                temporary.append(fd)
            actions.append((os.POSIX_SPAWN_DUP2, fd, target))
        return os.posix_spawn(path, list(argv), child_env(env), file_actions=actions,
                              setsigdef=_RESET_SIGNALS, setsigmask=(), setsid=True)
    finally:
        for fd in temporary:
            os.close(fd)
