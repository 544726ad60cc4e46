"""Running one build step: its command, its progress line, and the error that names it.

Every failure the builder reports is a BuildError whose message says which step failed and how.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

_T0 = time.monotonic()


class BuildError(Exception):
    """A build step failed; the message names the step and what failed."""


class StaleIndex(BuildError):
    """apt could not download a resolved package version (old package lists)."""


def log(msg: str) -> None:
    """Progress line on stderr, with the seconds since the start."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def elapsed() -> float:
    """Seconds since the builder started (for the final report)."""
    return time.monotonic() - _T0


def run(
    step: str,
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    capture: bool = True,
) -> str:
    """Run a command; on failure raise BuildError naming the step and showing its output."""
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
    except OSError as e:
        raise BuildError(f"{step}: cannot run {argv[0]}: {e}") from e
    if proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-25:]
        raise BuildError(
            f"{step}: `{' '.join(argv[:8])}{' ...' if len(argv) > 8 else ''}` "
            f"exited with status {proc.returncode}" + ("\n  " + "\n  ".join(tail) if tail else "")
        )
    return proc.stdout or ""
