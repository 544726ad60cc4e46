"""Everything an image is made from, hashed: the layer keys and the input hash of OUT.

A change to any input must change a hash, or a stale layer or image would be reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guestimage.debian import Resolution, resolve_packages
from guestimage.digests import builder_digest, hash_strings, sha256_file, tree_digest
from guestimage.layout import (
    AGENT_IGNORED_SUFFIXES,
    AGENT_SOURCES,
    FORMAT,
    GUEST,
    PYTHON,
    REPO,
    TRIPLET,
    copyengine_sources,
    read_list,
)
from guestimage.wheels import wheel_requirements


@dataclass
class Inputs:
    """Everything the image is made from, and the hashes derived from it."""

    res: Resolution
    fstype: str
    initrd_compression: str
    erofs_compression: str
    base_key: str
    kernel_key: str
    wheels_key: str
    copyengine_key: str
    input_hash: str
    agent_hashes: dict[str, str]


def copyengine_key(script: str) -> str:
    """Key of the copy engine layer: the builder, the guest's python and the engine's sources
    (C code, header, cffi build script), so a change to any of them compiles it again."""
    sources = [f"{p.relative_to(REPO)} {sha256_file(p)}" for p in copyengine_sources()]
    return hash_strings([script, PYTHON, TRIPLET, *sources])


def collect_inputs(
    cache: Path, fstype: str, initrd_compression: str, erofs_compression: str
) -> Inputs:
    """Resolve packages; hash the builder, packaging/guest/*, copy engine and agent sources."""
    rows = read_list(GUEST / "packages.txt")
    roots = [r[0] for r in rows if not r[0].startswith("!")]
    excluded = {r[0][1:] for r in rows if r[0].startswith("!")}
    res = resolve_packages(cache, roots, excluded)
    script = f"format={FORMAT} {builder_digest()}"
    pkg_lines = [f"{p.name} {p.version} {p.arch} {p.sha256}" for p in res.packages]
    kernel_line = f"{res.kernel.name} {res.kernel.version} {res.kernel.sha256}"
    guest_files = tree_digest(GUEST)
    base_key = hash_strings(
        [
            script,
            *pkg_lines,
            *tree_digest(GUEST / "skel"),
            (GUEST / "strip.txt").read_text(),
            (GUEST / "packages.txt").read_text(),
        ]
    )
    kernel_key = hash_strings([script, kernel_line, (GUEST / "modules.txt").read_text(), fstype])
    wheel_lines = wheel_requirements()
    wheels_key = hash_strings([script, base_key, *wheel_lines])
    ce_key = copyengine_key(script)
    agent_hashes = {
        name: hash_strings(tree_digest(src, ignore_suffixes=AGENT_IGNORED_SUFFIXES))
        for name, src in AGENT_SOURCES.items()
    }
    input_hash = hash_strings(
        [
            script,
            fstype,
            initrd_compression,
            erofs_compression,
            kernel_line,
            *pkg_lines,
            *guest_files,
            *wheel_lines,
            ce_key,
            *sorted(f"{k} {v}" for k, v in agent_hashes.items()),
        ]
    )
    return Inputs(
        res,
        fstype,
        initrd_compression,
        erofs_compression,
        base_key[:16],
        kernel_key[:16],
        wheels_key[:16],
        ce_key[:16],
        input_hash,
        agent_hashes,
    )
