"""Runtime settings: defaults, overridden by /etc/bulkhead/config.toml, then by environment."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from bulkhead import paths


class ConfigError(Exception):
    """The configuration file is unreadable or has a bad value."""


@dataclass
class Config:
    """What an operator may tune; every field has a working default."""

    guest_dir: str = paths.GUEST_DIR
    qemu_binary: str = "qemu-system-x86_64"
    memory_mib: int = 512
    vcpus: int = 1
    channel: str = "auto"  # auto | serial | vsock
    accel: str = "auto"  # auto | kvm | tcg
    boot_timeout: float = 30.0
    kernel_params: str = ""
    debug: bool = False
    pod_overhead_mib: int = 96  # guest RAM added to a pod's memory limit (kernel + agent)
    max_vcpus: int = 0  # most vCPUs a pod's CPU quota may buy; 0: the host's CPU count
    boot: str = "template"  # template (clone a booted VM) | cold (boot every VM)
    tcg_tb_mib: int = 64  # TCG code buffer per VM (MiB; 0: QEMU's 1 GiB): bench/footprint.py
    io_engine: str = "c"  # c (the cffi copy engine) | python (the fallback), host and guest
    debug_shell: bool = False  # `bulkhead shell`: a root shell in the guest, outside containers
    allow_unfiltered_qemu: bool = False  # run QEMU without seccomp or Landlock where missing
    # layered: image layers cached in the guest under a writable layer in guest memory, written
    # back to the snapshot (docs/architecture.md, "Container root filesystems") | shared: the
    # snapshot itself over the coherent 9p mount, every access a round trip to the host
    rootfs: str = "layered"

    def guest_image(self) -> GuestImage:
        """The guest files, as the image's manifest.json describes them (defaults without one)."""
        return GuestImage.load(Path(self.guest_dir))


@dataclass
class GuestImage:
    """Kernel, initrd and root image of the guest, plus the kernel options the build advises."""

    kernel: Path
    initrd: Path
    rootfs: Path
    kernel_params: str = ""
    input_hash: str = ""  # of everything the image was built from (templates are keyed by it)

    @classmethod
    def load(cls, guest_dir: Path) -> GuestImage:
        """Read manifest.json: the uncompressed vmlinux boots ~8 s faster under TCG."""
        image = cls(guest_dir / "vmlinuz", guest_dir / "initrd.img", guest_dir / "rootfs.erofs")
        try:
            with open(guest_dir / "manifest.json", "rb") as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            return image
        boot = manifest.get("boot") or {}
        if boot.get("kernel") and (guest_dir / boot["kernel"]).exists():
            image.kernel = guest_dir / boot["kernel"]
        rootfs = (manifest.get("rootfs") or {}).get("file")
        if rootfs:
            image.rootfs = guest_dir / rootfs
        image.kernel_params = str(boot.get("append") or "")
        image.input_hash = str(manifest.get("input_hash") or "")
        return image


def load(path: str = paths.CONFIG_FILE) -> Config:
    """Read the TOML file (section [bulkhead] or top level) if present, then env overrides."""
    cfg = Config()
    known = {f.name: f.type for f in fields(Config)}
    values: dict[str, object] = {}
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        values.update(raw.get("bulkhead", raw))
    for name in known:
        env = os.environ.get("BULKHEAD_" + name.upper())
        if env is not None:
            values[name] = env
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{path}: unknown setting {name!r}")
        setattr(cfg, name, _coerce(name, getattr(cfg, name), value, path))
    if cfg.channel not in ("auto", "serial", "vsock"):
        raise ConfigError(f"{path}: channel must be auto, serial or vsock, not {cfg.channel!r}")
    if cfg.accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"{path}: accel must be auto, kvm or tcg, not {cfg.accel!r}")
    if cfg.boot not in ("template", "cold"):
        raise ConfigError(f"{path}: boot must be template or cold, not {cfg.boot!r}")
    if cfg.io_engine not in ("c", "python"):
        raise ConfigError(f"{path}: io_engine must be c or python, not {cfg.io_engine!r}")
    if cfg.rootfs not in ("layered", "shared"):
        raise ConfigError(f"{path}: rootfs must be layered or shared, not {cfg.rootfs!r}")
    if cfg.tcg_tb_mib < 0:
        raise ConfigError(f"{path}: tcg_tb_mib must be 0 (QEMU's default) or a size in MiB")
    return cfg


def _coerce(name: str, default: object, value: object, path: str) -> object:
    """Convert a TOML or environment value to the type of the default."""
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)  # type: ignore[call-overload]
        if isinstance(default, float):
            return float(value)  # type: ignore[arg-type]
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: {name} = {value!r} is not a valid "
                          f"{type(default).__name__}") from None
