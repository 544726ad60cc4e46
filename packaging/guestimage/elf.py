"""ELF64 little-endian parsing: module info, shared-library needs, the kernel's PVH note.

Read directly from the bytes, so the builder needs neither binutils nor the guest's tools.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from guestimage.layout import TRIPLET
from guestimage.steps import BuildError


def elf_sections(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """(name offset, type, file offset, size, link) of every section of an ELF64 LE file."""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    out = []
    for i in range(shnum):
        name, typ, _flags, _addr, off, size, link = struct.unpack_from(
            "<IIQQQQI", data, shoff + i * shentsize
        )
        out.append((name, typ, off, size, link))
    return out


def modinfo(data: bytes) -> dict[str, list[str]]:
    """Key -> values of a kernel module's .modinfo section (ELF64 little-endian)."""
    if data[:5] != b"\x7fELF\x02":
        raise BuildError("kernel modules: not an ELF64 module")
    sections = elf_sections(data)
    (shstrndx,) = struct.unpack_from("<H", data, 0x3E)
    stroff = sections[shstrndx][2]
    info: dict[str, list[str]] = {}
    for name, _typ, off, size, _link in sections:
        if data[stroff + name : data.index(b"\0", stroff + name)] == b".modinfo":
            for item in data[off : off + size].split(b"\0"):
                k, sep, v = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(k, []).append(v)
    return info


def elf_needed(data: bytes) -> tuple[list[str], list[str]]:
    """DT_NEEDED libraries and DT_RUNPATH/DT_RPATH entries of an ELF64 LE file."""
    sections = elf_sections(data)
    needed: list[str] = []
    paths: list[str] = []
    for _name, typ, off, size, link in sections:
        if typ != 6:  # SHT_DYNAMIC
            continue
        stroff = sections[link][2]
        for pos in range(off, off + size, 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag in (1, 15, 29):
                s = data[stroff + val : data.index(b"\0", stroff + val)].decode()
                (needed if tag == 1 else paths).append(s)
    return needed, paths


def has_pvh_note(elf: bytes) -> bool:
    """True if an ELF64 kernel has the XEN_ELFNOTE_PHYS32_ENTRY note QEMU uses for PVH boot."""
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _f, p_off, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_off, p_off + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def check_shared_libs(root: Path) -> None:
    """Every ELF object in the tree must find its DT_NEEDED libraries inside the tree."""
    libdirs = [root / "usr/lib" / TRIPLET, root / "usr/lib"]
    missing: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            with open(path, "rb") as f:
                head = f.read(5)
                if head != b"\x7fELF\x02":
                    continue
                data = head + f.read()
            if len(data) < 64 or struct.unpack_from("<H", data, 0x10)[0] not in (2, 3):
                continue  # not an executable or shared object (e.g. a .o or .ko)
            needed, rpaths = elf_needed(data)
            dirs = [
                Path(str(root) + p.replace("$ORIGIN", str(path.parent)[len(str(root)) :]))
                for rp in rpaths
                for p in rp.split(":")
            ] + libdirs
            for lib in needed:
                if not any((d / lib).exists() for d in dirs):
                    missing.append(f"/{path.relative_to(root)} needs {lib}")
    if missing:
        raise BuildError(
            "shared libraries: missing in the image (add the Debian package that ships them "
            "to packaging/guest/packages.txt): " + "; ".join(sorted(missing)[:10])
        )
