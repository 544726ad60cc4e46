"""Checks of what a sandbox boots from: the guest image (its files against manifest.json) and
the VM template for the configured size (present, whole, room for another on its filesystem)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bulkhead.doctor.context import Context
from bulkhead.doctor.report import Finding, failure, ok, warning
from bulkhead.sandbox.mounts import MountPoint, parse_mountinfo
from bulkhead.template import store
from bulkhead.template.key import TemplateError, key_for
from bulkhead.vmm.base import VMError

MANIFEST = "manifest.json"
MIB = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_problems(guest_dir: Path, manifest: Mapping[str, Any],
                      digest: Callable[[Path], str] = sha256_file) -> list[str]:
    """Every file manifest.json records (its "files" table) must exist with the recorded size
    and SHA-256; each problem names the file."""
    files = manifest.get("files")
    if not isinstance(files, Mapping) or not files:
        return [f"{guest_dir / MANIFEST} records no files"]
    problems: list[str] = []
    for role, entry in sorted(files.items()):
        path = guest_dir / str(entry.get("file", role))
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{path} ({role}) is missing")
            continue
        if size != entry.get("size"):
            problems.append(f"{path} ({role}) has {size} bytes, {MANIFEST} records "
                            f"{entry.get('size')}")
        elif entry.get("sha256") and digest(path) != entry["sha256"]:
            problems.append(f"{path} ({role}) differs from its SHA-256 in {MANIFEST}")
    return problems


def build_fix(guest_dir: str) -> str:
    """How to (re)build the image into guest_dir."""
    return (f"packaging/build-guest-image --out {guest_dir}   (in the Bulkhead source tree; "
            "`make install` runs it for the default directory)")


def check_guest_image(ctx: Context) -> Iterator[Finding]:
    """The guest files exist and match their manifest."""
    guest_dir = Path(ctx.config.guest_dir)
    fix = build_fix(ctx.config.guest_dir)
    if not guest_dir.is_dir():
        yield failure("guest image", f"guest image directory {guest_dir} does not exist", fix)
        return
    try:
        manifest = json.loads((guest_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        yield failure("guest image", f"{guest_dir / MANIFEST} is missing or unreadable: "
                                     f"{getattr(exc, 'strerror', None) or exc}", fix)
        return
    problems = manifest_problems(guest_dir, manifest)
    image = ctx.image()
    for what, path in (("kernel", image.kernel), ("initrd", image.initrd),
                       ("rootfs", image.rootfs)):
        if not path.is_file():
            problems.append(f"{path} (the {what} the shim boots) is missing")
    if problems:
        yield failure("guest image", "; ".join(dict.fromkeys(problems)), fix)
        return
    files = manifest["files"].values()
    total = sum(int(e["size"]) for e in files)
    kernel = manifest.get("kernel", {}).get("release", "?")
    yield ok("guest image", f"{guest_dir}: {len(files)} files ({total // MIB} MiB) match "
                            f"{MANIFEST} (size, SHA-256); kernel {kernel}, built "
                            f"{manifest.get('built_at', '?')}")


def mount_of(path: Path, mounts: list[MountPoint]) -> MountPoint | None:
    """The mount holding path: the longest mount point that is a prefix of it."""
    best: MountPoint | None = None
    for m in mounts:
        inside = path == Path(m.mount_point) or Path(m.mount_point) in path.parents
        if inside and (best is None or len(m.mount_point) > len(best.mount_point)):
            best = m
    return best


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_templates(ctx: Context) -> Iterator[Finding]:
    """The template this config's sandboxes clone is there and whole, with room for another."""
    cfg = ctx.config
    if cfg.boot == "cold":
        yield ok("template", "boot = \"cold\": sandboxes boot without a template")
        return
    build = "bulkhead template build"
    verdict = ctx.accel()
    try:
        from bulkhead.vmm.qemu import resolve_channel

        config = ctx.vm_config()
        key = key_for(config, ctx.image().input_hash, verdict.auto or "tcg",
                      resolve_channel(config))
    except (TemplateError, VMError, OSError) as exc:
        yield warning("template", f"cannot tell which template sandboxes need: {exc}",
                      "make the qemu, guest image and vsock checks pass, then " + build)
        return
    size = f"{key.memory_mib} MiB, {key.vcpus} vCPU, {key.accel}, {key.channel}"
    template = store.load(key.digest)
    others = [t for t in store.all_templates() if t.digest != key.digest]
    room, enough = _room(template.disk_usage() if template else key.memory_mib * MIB)
    if template is None:
        yield warning("template", f"no template {key.digest} ({size}): the first sandbox "
                                  f"builds it and waits; {room}", build)
        return
    problem = template.problem(key)
    if problem:
        yield warning("template", f"template {key.digest} ({size}) is damaged: {problem}",
                      build + " --force")
        return
    used = (f"; {len(others)} other template(s) use "
            f"{sum(t.disk_usage() for t in others) // MIB} MiB" if others else "")
    detail = f"{key.digest} ({size}) whole, {template.disk_usage() // MIB} MiB; {room}{used}"
    if not enough:
        yield warning("template", detail,
                      "bulkhead template rm DIGEST   (old ones, from `bulkhead template ls`), "
                      f"or give {store.templates_dir()} a larger filesystem")
        return
    yield ok("template", detail)


def _room(need: int) -> tuple[str, bool]:
    """Free space where templates live, and whether one more template of `need` bytes fits."""
    where = store.templates_dir()
    st = os.statvfs(_existing(where))
    free = st.f_bavail * st.f_frsize
    mount = mount_of(where, parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
    fs = f"{mount.fs_type} at {mount.mount_point}" if mount else "unknown filesystem"
    enough = free >= need
    verdict = "room for another" if enough else "no room for another"
    return f"{free // MIB} MiB free on {where} ({fs}), {verdict} (~{need // MIB} MiB)", enough
