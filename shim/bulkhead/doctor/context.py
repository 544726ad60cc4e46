"""What every check shares: the options, the runtime config (or the defaults, when the file is
broken), the guest image it names, and the accelerator `accel = auto` would pick (decided once:
on a KVM host that may take a probe boot)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bulkhead import config as config_mod
from bulkhead import paths
from bulkhead.config import Config, GuestImage
from bulkhead.vmm.base import VMConfig, VMError


@dataclass
class Options:
    """The command line."""

    pods: int = 10
    smoke: bool = True
    containerd_configs: list[Path] = field(default_factory=list)
    containerd: str | None = None  # the smoke test's containerd binary (default: found)


@dataclass
class AccelVerdict:
    """What `accel = auto` picks here and why, plus the two facts behind a TCG verdict."""

    auto: str  # kvm | tcg ("" if it could not be decided)
    reason: str
    kvm_device_ok: bool
    kvm_device_why: str
    cpu_virt: bool


@dataclass
class Context:
    """Loaded once per doctor run; a context manager that removes its scratch directory."""

    options: Options
    config_path: str = paths.CONFIG_FILE
    config: Config = field(default_factory=Config)
    config_error: str = ""
    _scratch: Path | None = field(default=None, repr=False)
    _accel: AccelVerdict | None = field(default=None, repr=False)

    @classmethod
    def load(cls, options: Options, config_path: str = paths.CONFIG_FILE) -> Context:
        """Read the config; a broken one is recorded and the other checks use the defaults."""
        ctx = cls(options, config_path)
        try:
            ctx.config = config_mod.load(config_path)
        except config_mod.ConfigError as exc:
            ctx.config_error = str(exc)
        return ctx

    def __enter__(self) -> Context:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def setting_source(self, name: str) -> str:
        """Where an operator changes a setting: the environment variable if it is set there."""
        env = "BULKHEAD_" + name.upper()
        return f"the environment ({env})" if env in os.environ else self.config_path

    def image(self) -> GuestImage:
        return self.config.guest_image()

    def scratch(self) -> Path:
        """A private directory for a KVM probe boot's state (removed on exit)."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="bulkhead-doctor-"))
        return self._scratch

    def vm_config(self) -> VMConfig:
        """The VM a sandbox would ask for, as template.planning builds it."""
        from bulkhead.template.planning import vm_config

        scratch = str(self.scratch())
        return vm_config(self.config, self.image(), "doctor", scratch, scratch)

    def accel(self) -> AccelVerdict:
        """What accel = auto picks, through the shim's own decision (vmm.accel)."""
        if self._accel is None:
            from bulkhead.vmm import accel

            device_ok, device_why = accel.kvm_device_usable()
            verdict = AccelVerdict("", "", device_ok, device_why, accel.cpu_has_virt())
            auto_config = dataclasses.replace(self.vm_config(), accel="auto")
            try:
                verdict.auto, verdict.reason = asyncio.run(accel.choose_accel(auto_config))
            except (OSError, VMError) as exc:  # the probe needs the guest kernel and QEMU
                verdict.reason = f"cannot decide: {exc}"
            self._accel = verdict
        return self._accel
