"""Kernel modules for the initrd: which ones, in what load order, decompressed and unsigned.

busybox insmod resolves nothing itself, so the order (dependencies and softdeps first) is
computed here from modules.dep and each module's .modinfo.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from guestimage.elf import modinfo
from guestimage.layout import GUEST, read_list
from guestimage.steps import BuildError

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def wanted_modules(fstype: str) -> list[tuple[str, bool]]:
    """modules.txt as (name, required), with @rootfs replaced by the root filesystem module."""
    out = []
    for row in read_list(GUEST / "modules.txt"):
        name = fstype if row[0] == "@rootfs" else row[0]
        flag = row[1] if len(row) > 1 else "required"
        if flag not in ("required", "optional"):
            raise BuildError(f"modules.txt: '{flag}' for {name} is neither required nor optional")
        out.append((name, flag == "required"))
    return out


def module_bytes(path: Path) -> bytes:
    """A module file's contents, decompressed (busybox insmod wants plain .ko)."""
    raw = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".zst"):
        zstd = shutil.which("zstd")
        if not zstd:
            raise BuildError(
                f"kernel modules: {path.name} is zstd-compressed and zstd is not installed"
            )
        return subprocess.run([zstd, "-dc", str(path)], check=True, stdout=subprocess.PIPE).stdout
    return raw


def module_name(path: str) -> str:
    """Kernel module name of a module path ('-' and '_' are the same to the kernel)."""
    base = os.path.basename(path)
    for suf in MODULE_SUFFIXES:
        if base.endswith(suf):
            base = base[: -len(suf)]
    return base.replace("-", "_")


@dataclass
class ModuleTree:
    """What depmod knows about a kernel's modules."""

    base: Path  # lib/modules/<release>
    deps: dict[str, list[str]]  # name -> dependency names (modules.dep)
    paths: dict[str, str]  # name -> path relative to base
    builtin: set[str]
    aliases: dict[str, list[str]]


def load_module_tree(base: Path) -> ModuleTree:
    """Parse modules.dep, modules.builtin and modules.alias of an unpacked kernel."""
    deps: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        name = module_name(mod)
        paths[name] = mod
        deps[name] = [module_name(d) for d in rest.split()]
    builtin = {module_name(m) for m in (base / "modules.builtin").read_text().split()}
    aliases: dict[str, list[str]] = {}
    alias_file = base / "modules.alias"
    if alias_file.exists():
        for line in alias_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias":
                aliases.setdefault(parts[1], []).append(module_name(parts[2]))
    return ModuleTree(base, deps, paths, builtin, aliases)


def softdeps(tree: ModuleTree, name: str) -> list[str]:
    """'softdep pre:' modules of a module, aliases resolved (generic implementations preferred)."""
    info = modinfo(module_bytes(tree.base / tree.paths[name]))
    out = []
    for sd in info.get("softdep", []):
        words = sd.split()
        pre = words[words.index("pre:") + 1 :] if "pre:" in words else []
        pre = pre[: pre.index("post:")] if "post:" in pre else pre
        for want in pre:
            w = want.replace("-", "_")
            if w in tree.paths or w in tree.builtin:
                out.append(w)
                continue
            cands = sorted(
                set(tree.aliases.get(want, [])), key=lambda m: (not m.endswith("_generic"), m)
            )
            if cands:
                out.append(cands[0])
    return out


def order_modules(
    tree: ModuleTree, wanted: list[tuple[str, bool]]
) -> tuple[list[tuple[str, bool]], list[str]]:
    """Load order (dependencies first) with required flags, and the wanted modules built in."""
    order: list[str] = []
    required: dict[str, bool] = {}
    builtin: list[str] = []

    def visit(name: str, req: bool, chain: tuple[str, ...]) -> None:
        if name in tree.builtin:
            return
        if name not in tree.paths:
            raise BuildError(
                f"kernel modules: {name} (needed by {' <- '.join(chain) or 'modules.txt'}) "
                "is neither built in nor a module of this kernel"
            )
        was_required = required.get(name, False)
        required[name] = was_required or req
        if name in chain or (name in order and (was_required or not req)):
            return
        for dep in softdeps(tree, name) + tree.deps[name]:
            visit(dep, req, chain + (name,))  # again when name became required
        if name not in order:
            order.append(name)

    for name, req in wanted:
        n = name.replace("-", "_")
        if n in tree.builtin:
            builtin.append(n)
        else:
            visit(n, req, ())
    return [(n, required[n]) for n in order], builtin


MODULE_SIG_MAGIC = b"~Module signature appended~\n"


def strip_module_signature(data: bytes) -> bytes:
    """A module without its appended signature (struct module_signature + magic).

    Verifying the RSA signatures of ~20 modules costs ~0.35 s of boot under TCG;
    the kernel does not enforce signatures (MODULE_SIG_FORCE is off), and the
    modules come from the apt-verified kernel package.
    """
    if not data.endswith(MODULE_SIG_MAGIC):
        return data
    (sig_len,) = struct.unpack_from(">I", data, len(data) - len(MODULE_SIG_MAGIC) - 4)
    return data[: len(data) - len(MODULE_SIG_MAGIC) - 12 - sig_len]
