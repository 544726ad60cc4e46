"""Content hashes: the cache keys and input hash are made of these, so they must be stable."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from guestimage.layout import PACKAGING, builder_files


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_strings(parts: Iterable[str]) -> str:
    """Hex SHA-256 over a sequence of strings (each length-prefixed, so unambiguous)."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode()
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def tree_digest(
    root: Path, rel_prefix: str = "", ignore_suffixes: tuple[str, ...] = (".pyc", ".pyo")
) -> list[str]:
    """Path, mode and content digest of every file under root (no __pycache__, no file ending
    in ignore_suffixes: what a copy leaves out must not change the hash)."""
    out: list[str] = []
    if not root.exists():
        return [f"{rel_prefix}<missing>"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(ignore_suffixes):
                continue
            p = Path(dirpath) / name
            rel = rel_prefix + str(p.relative_to(root))
            if p.is_symlink():
                out.append(f"{rel} -> {os.readlink(p)}")
            else:
                out.append(f"{rel} {stat.S_IMODE(p.stat().st_mode):o} {sha256_file(p)}")
    return out


def builder_digest() -> str:
    """Hex SHA-256 over the builder's own files (path relative to packaging/ and content hash)."""
    return hash_strings(f"{p.relative_to(PACKAGING)} {sha256_file(p)}" for p in builder_files())
