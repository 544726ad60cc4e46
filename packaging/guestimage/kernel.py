"""The kernel layer: Debian's kernel unpacked, vmlinux extracted, config read, modules chosen.

vmlinux (PVH entry) is kept because booting vmlinuz under TCG spends ~8 s decompressing it.
"""

from __future__ import annotations

import json
import lzma
import re
import shutil
import tempfile
import zlib
from pathlib import Path

from guestimage.debian import extract_deb
from guestimage.digests import sha256_file
from guestimage.elf import has_pvh_note
from guestimage.files import rmtree
from guestimage.kernel_modules import (
    load_module_tree,
    module_bytes,
    order_modules,
    strip_module_signature,
)
from guestimage.steps import BuildError, log, run

# Kernel config symbols reported in the manifest (=y built in, =m module).
REPORTED_CONFIG = tuple(
    """VIRTIO VIRTIO_MMIO VIRTIO_BLK VIRTIO_CONSOLE HW_RANDOM HW_RANDOM_VIRTIO NET_9P NET_9P_VIRTIO
    9P_FS NETFS_SUPPORT FSCACHE EROFS_FS EXT4_FS OVERLAY_FS VSOCKETS VIRTIO_VSOCKETS
    VIRTIO_VSOCKETS_COMMON VIRTIO_NET PVH VIRTIO_MMIO_CMDLINE_DEVICES KERNEL_XZ MODULE_SIG
    MODULE_SIG_FORCE""".split()
)


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF vmlinux inside a bzImage (xz or gzip payload), or None."""
    for magic, decomp in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08\x00", "gzip")):
        off = bzimage.find(magic)
        while off != -1:
            try:
                if decomp == "xz":
                    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[off:])
                else:
                    out = zlib.decompressobj(wbits=31).decompress(bzimage[off:])
                if out[:4] == b"\x7fELF":
                    return out
            except (lzma.LZMAError, zlib.error, OSError, EOFError):
                pass
            off = bzimage.find(magic, off + 1)
    return None


def kernel_config(text: str) -> dict[str, str]:
    """CONFIG_X values of interest: 'y', 'm' or 'n'."""
    values = dict(re.findall(r"^CONFIG_(\w+)=(\S+)$", text, re.M))
    return {k: values.get(k, "n") for k in REPORTED_CONFIG}


def build_kernel_layer(
    layer: Path, kernel_deb: Path, busybox: Path, wanted: list[tuple[str, bool]], tmp_root: Path
) -> None:
    """Unpack the kernel, run depmod, keep vmlinuz, vmlinux and the chosen modules in layer."""
    log(f"kernel layer: unpacking {kernel_deb.name}")
    work = Path(tempfile.mkdtemp(prefix="kernel-", dir=tmp_root))
    try:
        unpacked = work / "root"
        extract_deb(kernel_deb, unpacked)
        releases = [p.name for p in (unpacked / "lib/modules").iterdir() if p.is_dir()]
        if len(releases) != 1:
            raise BuildError(f"kernel layer: expected one release in lib/modules, found {releases}")
        release = releases[0]
        base = unpacked / "lib/modules" / release
        if not (base / "modules.dep").exists():
            log("kernel layer: generating modules.dep with busybox depmod")
            run("depmod", [str(busybox), "depmod", "-b", str(unpacked), release])
        tree = load_module_tree(base)
        order, builtin = order_modules(tree, wanted)
        stage = work / "layer"
        (stage / "modules").mkdir(parents=True)
        vmlinuz = unpacked / "boot" / f"vmlinuz-{release}"
        shutil.copy2(vmlinuz, stage / "vmlinuz")
        config_text = (unpacked / "boot" / f"config-{release}").read_text()
        (stage / "config").write_text(config_text)
        vmlinux = extract_vmlinux(vmlinuz.read_bytes())
        pvh = bool(vmlinux) and has_pvh_note(vmlinux or b"")
        if vmlinux and pvh:
            (stage / "vmlinux").write_bytes(vmlinux)
        else:
            log("kernel layer: warning: no PVH-bootable vmlinux could be extracted; only vmlinuz")
        modules = []
        sig_force = re.search(r"^CONFIG_MODULE_SIG_FORCE=y$", config_text, re.M) is not None
        for name, req in order:
            data = module_bytes(base / tree.paths[name])
            if not sig_force:
                data = strip_module_signature(data)
            (stage / "modules" / f"{name}.ko").write_bytes(data)
            modules.append(
                {"name": name, "required": req, "source": tree.paths[name], "size": len(data)}
            )
        digests = {
            f.name: sha256_file(f) for f in (stage / "vmlinuz", stage / "vmlinux") if f.exists()
        }
        info = {
            "release": release,
            "modules": modules,
            "builtin": builtin,
            "pvh": pvh,
            "sha256": digests,
            "module_signatures": "kept" if sig_force else "stripped",
            "config": kernel_config(config_text),
        }
        (stage / "kernel.json").write_text(json.dumps(info, indent=1))
        rmtree(layer)
        stage.rename(layer)
    finally:
        rmtree(work)
