"""Guest image builder: kernel module info, load order and signatures; vmlinux and its PVH note."""

from __future__ import annotations

import lzma
import struct
from pathlib import Path

import pytest
from guestimage.elf import has_pvh_note, modinfo
from guestimage.kernel import extract_vmlinux, kernel_config
from guestimage.kernel_modules import (
    MODULE_SIG_MAGIC,
    load_module_tree,
    module_name,
    order_modules,
    softdeps,
    strip_module_signature,
)
from guestimage.steps import BuildError


def elf_module(info: list[str]) -> bytes:
    """A minimal ELF64 LE relocatable with a .modinfo section (what depmod and modinfo read)."""
    payload = b"".join(s.encode() + b"\0" for s in info)
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    info_off = 64
    str_off = info_off + len(payload)
    sh_off = (str_off + len(shstrtab) + 7) & ~7
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HH", header, 0x10, 1, 62)  # ET_REL, x86-64
    struct.pack_into("<Q", header, 0x28, sh_off)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)

    def section(name: int, typ: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, typ, 0, 0, off, size, 0, 0, 1, 0)

    body = bytes(header) + payload + shstrtab
    body += b"\0" * (sh_off - len(body))
    return body + section(0, 0, 0, 0) + section(1, 1, info_off, len(payload)) + \
        section(10, 3, str_off, len(shstrtab))


def elf_kernel(notes: list[tuple[bytes, int]]) -> bytes:
    """A minimal ELF64 with one PT_NOTE segment holding (name, type) notes of 4-byte descs."""
    note = b""
    for name, ntype in notes:
        n = name + b"\0"
        note += struct.pack("<III", len(n), 4, ntype) + n + b"\0" * (-len(n) % 4) + b"\1\0\0\0"
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), len(note), 4)
    return bytes(header) + phdr + note


def test_modinfo_reads_every_value() -> None:
    data = elf_module(["license=GPL", "softdep=pre: crc32c", "alias=fs-erofs", "alias=erofs"])
    assert modinfo(data) == {"license": ["GPL"], "softdep": ["pre: crc32c"],
                             "alias": ["fs-erofs", "erofs"]}
    with pytest.raises(BuildError, match="not an ELF64"):
        modinfo(b"\x7fELF\x01" + bytes(60))


def test_module_name() -> None:
    assert module_name("kernel/fs/9p/9p.ko.xz") == "9p"
    assert module_name("kernel/drivers/virtio/virtio-mmio.ko") == "virtio_mmio"
    assert module_name("kernel/crypto/crc32c_generic.ko.zst") == "crc32c_generic"


MODULES = {  # name -> (path, modules.dep dependencies, .modinfo lines)
    "virtio": ("kernel/drivers/virtio/virtio.ko.xz", [], []),
    "virtio_ring": ("kernel/drivers/virtio/virtio_ring.ko.xz", [], []),
    "virtio_mmio": ("kernel/drivers/virtio/virtio_mmio.ko.xz", ["virtio", "virtio_ring"], []),
    "virtio_blk": ("kernel/drivers/block/virtio_blk.ko.xz", ["virtio", "virtio_ring"], []),
    "crc32c_generic": ("kernel/crypto/crc32c_generic.ko.xz", [], []),
    "crc32c_intel": ("kernel/arch/x86/crypto/crc32c-intel.ko.xz", [], []),
    "libcrc32c": ("kernel/lib/libcrc32c.ko.xz", [], ["softdep=pre: crc32c"]),
    "9pnet": ("kernel/net/9p/9pnet.ko.xz", [], []),
    "9pnet_virtio": ("kernel/net/9p/9pnet_virtio.ko.xz", ["9pnet", "virtio", "virtio_ring"], []),
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """lib/modules/<release> of a small kernel: xz modules, modules.dep/.builtin/.alias."""
    base = tmp_path / "lib/modules/6.1.0-test"
    dep_lines = []
    for path, deps, info in MODULES.values():
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_bytes(lzma.compress(elf_module(info), format=lzma.FORMAT_XZ))
        dep_paths = [MODULES[d][0] for d in deps]
        dep_lines.append(f"{path}: {' '.join(dep_paths)}".rstrip())
    (base / "modules.dep").write_text("\n".join(dep_lines) + "\n")
    (base / "modules.builtin").write_text("kernel/lib/crc16.ko\nkernel/fs/mbcache.ko\n")
    (base / "modules.alias").write_text(
        "alias crypto-crc32c crc32c_intel\nalias crc32c crc32c_intel\nalias crc32c crc32c_generic\n"
    )
    return base


def test_softdeps_prefer_the_generic_implementation(tree: Path) -> None:
    mt = load_module_tree(tree)
    assert softdeps(mt, "libcrc32c") == ["crc32c_generic"]
    assert softdeps(mt, "virtio_blk") == []
    assert mt.builtin == {"crc16", "mbcache"}


def test_order_is_dependencies_first(tree: Path) -> None:
    wanted = [("virtio_blk", True), ("virtio-mmio", True), ("libcrc32c", True), ("crc16", True),
              ("9pnet_virtio", False), ("9pnet", True)]
    order, builtin = order_modules(load_module_tree(tree), wanted)
    names = [n for n, _req in order]
    assert names == ["virtio", "virtio_ring", "virtio_blk", "virtio_mmio", "crc32c_generic",
                     "libcrc32c", "9pnet", "9pnet_virtio"]
    assert builtin == ["crc16"]
    required = dict(order)
    # 9pnet came in as a dependency of an optional module, and is required in its own right.
    assert required["9pnet"] is True and required["9pnet_virtio"] is False
    assert required["crc32c_generic"] is True


def test_optional_dependency_becomes_required(tree: Path) -> None:
    order, _ = order_modules(load_module_tree(tree), [("9pnet_virtio", False),
                                                      ("virtio_blk", True)])
    assert order == [("9pnet", False), ("virtio", True), ("virtio_ring", True),
                     ("9pnet_virtio", False), ("virtio_blk", True)]


def test_unknown_module_names_the_chain(tree: Path) -> None:
    with pytest.raises(BuildError, match="overlay .*modules.txt"):
        order_modules(load_module_tree(tree), [("overlay", True)])


def test_strip_module_signature() -> None:
    body = elf_module(["license=GPL"])
    signature = b"S" * 300
    info = struct.pack(">BBBBBBBxI", 0, 0, 2, 0, 0, 0, 0, len(signature))  # module_signature
    assert len(info) == 12
    assert strip_module_signature(body + signature + info + MODULE_SIG_MAGIC) == body
    assert strip_module_signature(body) == body


def test_vmlinux_from_bzimage_and_pvh_note() -> None:
    vmlinux = elf_kernel([(b"GNU", 3), (b"Xen", 18)])
    payload = lzma.compress(vmlinux, format=lzma.FORMAT_XZ)
    # A stray xz magic before the real payload must be skipped.
    bzimage = b"MZ" + b"\0" * 100 + b"\xfd7zXZ\x00garbage" + payload + b"\0" * 64
    assert extract_vmlinux(bzimage) == vmlinux
    assert has_pvh_note(vmlinux)
    assert not has_pvh_note(elf_kernel([(b"GNU", 3), (b"Xen", 17)]))
    assert extract_vmlinux(b"MZ" + b"\0" * 100) is None


def test_kernel_config_reports_y_m_n() -> None:
    cfg = kernel_config("CONFIG_VIRTIO=m\nCONFIG_PVH=y\n# CONFIG_MODULE_SIG_FORCE is not set\n")
    assert cfg["VIRTIO"] == "m" and cfg["PVH"] == "y"
    assert cfg["MODULE_SIG_FORCE"] == "n" and cfg["EROFS_FS"] == "n"
