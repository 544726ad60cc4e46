"""The cached layers (Debian root, kernel, wheels, copy engine): reused by key, built where
missing, pruned when no longer used."""

from __future__ import annotations

from pathlib import Path

from guestimage.copyengine import build_copyengine_layer
from guestimage.debian import ensure_debs
from guestimage.files import rmtree
from guestimage.inputs import Inputs
from guestimage.kernel import build_kernel_layer
from guestimage.kernel_modules import wanted_modules
from guestimage.rootfs import build_base_layer
from guestimage.wheels import build_wheels_layer

KINDS = ("kernel", "base", "wheels", "copyengine")


def layer(cache: Path, kind: str, key: str) -> Path:
    """Path of a cache layer directory."""
    return cache / f"{kind}-{key}"


def prune_layers(cache: Path, keep: set[Path]) -> None:
    """Remove cache layers that the current build does not use."""
    for p in cache.iterdir():
        if p.is_dir() and p.name.split("-")[0] in KINDS and p not in keep:
            rmtree(p)


def ensure_layers(cache: Path, inputs: Inputs, tmp_root: Path) -> tuple[Path, Path, Path, Path]:
    """The Debian root, kernel, wheels and copy engine layers for these inputs, built where
    missing."""
    res = inputs.res
    base = layer(cache, "base", inputs.base_key)
    kern = layer(cache, "kernel", inputs.kernel_key)
    wheels = layer(cache, "wheels", inputs.wheels_key)
    engine = layer(cache, "copyengine", inputs.copyengine_key)
    root = base / "root"
    if not (root.is_dir() and (kern / "kernel.json").exists()):
        debs = ensure_debs(res.packages + [res.kernel], cache / "debs", tmp_root)
        if not root.is_dir():
            build_base_layer(base, res.packages, debs, tmp_root)
        if not (kern / "kernel.json").exists():
            modules = wanted_modules(inputs.fstype)
            busybox = root / "usr/bin/busybox"
            build_kernel_layer(kern, debs[res.kernel.name], busybox, modules, tmp_root)
    if not (wheels / "wheels.json").exists():
        build_wheels_layer(wheels, root, cache / "wheelhouse", tmp_root)
    if not (engine / "copyengine.json").exists():
        build_copyengine_layer(engine, tmp_root)
    return base, kern, wheels, engine
