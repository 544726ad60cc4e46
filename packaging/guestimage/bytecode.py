"""Bytecode compiled by the guest's own python3.11, and the check that nothing was missed.

The root is read-only, so a module without a valid pyc would be compiled again at every import.
"""

from __future__ import annotations

from pathlib import Path

from guestimage.layout import PYTHON, TRIPLET
from guestimage.steps import BuildError, run


def guest_python(root: Path, args: list[str], step: str) -> str:
    """Run the staged guest python3.11 on the host through the staged dynamic loader."""
    libdir = root / "usr/lib" / TRIPLET
    # No bytecode writing as a side effect: compileall would then skip those modules
    # (timestamp pycs, which erofs's fixed mtimes make stale).
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONHOME": str(root / "usr"),
        "PYTHONHASHSEED": "0",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    loader = str(libdir / "ld-linux-x86-64.so.2")
    argv = [loader, "--library-path", str(libdir), str(root / "usr/bin" / PYTHON), "-S", *args]
    return run(step, argv, env=env)


def compile_bytecode(root: Path, target: Path, guest_dir: str, step: str) -> None:
    """Precompile target (a directory in the staging root) with the guest python.

    Unchecked-hash pycs are valid whatever the file mtimes (erofs is read-only);
    file names inside the bytecode are the guest paths (guest_dir).
    """
    flags = "-m compileall -q -f -j0 --invalidation-mode unchecked-hash".split()
    guest_python(root, [*flags, "-s", str(target), "-p", guest_dir, str(target)], step)


def check_bytecode(tree: Path) -> None:
    """Every .py under tree must have an unchecked-hash pyc (flags 0b01) next to it."""
    stale = []
    for py in tree.rglob("*.py"):
        pyc = py.parent / "__pycache__" / f"{py.stem}.cpython-311.pyc"
        try:
            with open(pyc, "rb") as f:
                flags = int.from_bytes(f.read(8)[4:8], "little")
        except OSError:
            flags = -1
        if flags != 1:
            stale.append(str(py.relative_to(tree)))
    if stale:
        raise BuildError(
            f"bytecode: {len(stale)} modules under {tree} lack an unchecked-hash pyc, "
            f"e.g. {', '.join(sorted(stale)[:5])}"
        )
