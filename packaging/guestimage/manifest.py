"""manifest.json: what went into the image and what came out; also how a build knows that OUT
is already current."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from guestimage.digests import sha256_file
from guestimage.inputs import Inputs
from guestimage.layout import FORMAT, GUEST_PYTHONPATH, PYTHON, ROOT_DEV


def file_entry(path: Path, known_sha256: str | None = None) -> dict[str, object]:
    """Size and SHA-256 of an output file for the manifest."""
    return {
        "file": path.name,
        "size": path.stat().st_size,
        "sha256": known_sha256 or sha256_file(path),
    }


def up_to_date(out: Path, input_hash: str) -> bool:
    """True if OUT holds a complete image built from exactly these inputs."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("input_hash") != input_hash:
        return False
    for entry in manifest.get("files", {}).values():
        p = out / entry["file"]
        if not p.exists() or p.stat().st_size != entry["size"]:
            return False
    return True


def write_manifest(
    result: Path,
    inputs: Inputs,
    kinfo: dict[str, Any],
    wheels: list[dict[str, str]],
    copy_engine: dict[str, str],
    pyver: str,
    rootfs_name: str,
    tree_bytes: int,
) -> None:
    """manifest.json: what went into the image and what came out."""
    known = kinfo.get("sha256", {})
    files = {
        "kernel": file_entry(result / "vmlinuz", known.get("vmlinuz")),
        "initrd": file_entry(result / "initrd.img"),
        "rootfs": file_entry(result / rootfs_name),
    }
    if (result / "vmlinux").exists():
        files["kernel_pvh"] = file_entry(result / "vmlinux", known.get("vmlinux"))
    k = inputs.res.kernel
    manifest = {
        "format": FORMAT,
        "input_hash": inputs.input_hash,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": {
            "package": k.name,
            "version": k.version,
            "release": kinfo["release"],
            "pvh_entry": kinfo["pvh"],
            "config": kinfo["config"],
            "module_signatures": kinfo["module_signatures"],
            "modules": [{"name": m["name"], "required": m["required"]} for m in kinfo["modules"]],
            "modules_builtin": kinfo["builtin"],
        },
        "initrd": {"compression": inputs.initrd_compression},
        "rootfs": {
            "file": rootfs_name,
            "fstype": inputs.fstype,
            "device": ROOT_DEV,
            "compression": inputs.erofs_compression if inputs.fstype == "erofs" else "none",
            "tree_bytes": tree_bytes,
        },
        "python": {
            "version": pyver,
            "executable": f"/usr/bin/{PYTHON}",
            "pythonpath": "/" + GUEST_PYTHONPATH,
        },
        "packages": [
            {"name": p.name, "version": p.version, "arch": p.arch} for p in inputs.res.packages
        ],
        "wheels": [
            {"name": w["name"], "version": w["version"], "file": w["file"], "sha256": w["sha256"]}
            for w in wheels
        ],
        "agent_sources": inputs.agent_hashes,
        # bulkhead_wire._copyengine: where, its sha256, the host python + cffi that built it and
        # the guest's _cffi_backend it was checked against.
        "copy_engine": copy_engine,
        "layers": {
            "base": inputs.base_key,
            "kernel": inputs.kernel_key,
            "wheels": inputs.wheels_key,
            "copyengine": inputs.copyengine_key,
        },
        # Measured guidance for the shim (packaging/README-guest.md): prefer the PVH vmlinux,
        # append these, and under TCG also tsc_early_khz=<host TSC kHz> (else boot hangs).
        "boot": {
            "kernel": "vmlinux" if (result / "vmlinux").exists() else "vmlinuz",
            "append": "cryptomgr.notests",
            "append_tcg": "tsc=reliable",
            "tcg_needs_tsc_early_khz": True,
        },
        "files": files,
    }
    (result / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
