"""Which containerd (and ctr) a private instance runs: the binary given by path, else the node's
own `containerd` on PATH, else the development installs that `make install` provides (1.6 from
bookworm in /usr/bin, 1.7 and 2.1 unpacked under /opt/bulkhead). The version is what
`containerd --version` says, read by the installer's parser (install/containerd_config.py)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bulkhead.demo.errors import ContainerdError
from bulkhead.install import containerd_config as cc

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_VERSION = "1.6"  # the development install tried first when PATH has no containerd
POINT_AT_ONE = "give the node's containerd binary with --containerd PATH"


@dataclass(frozen=True)
class ContainerdBinaries:
    """A containerd binary and the ctr that talks to it; `minor` (e.g. "1.7") if it must be
    that minor version (a development install)."""

    containerd: Path
    ctr: Path
    minor: str | None = None

    @property
    def bin_dir(self) -> Path:
        return self.containerd.parent

    def exact_version(self) -> str | None:
        """The full version if both binaries run and containerd is of the expected minor."""
        if not (os.access(self.containerd, os.X_OK) and os.access(self.ctr, os.X_OK)):
            return None
        found = cc.binary_version(str(self.containerd))
        if found is None or (self.minor and not found.startswith(self.minor + ".")):
            return None
        return found


def _in_dir(bin_dir: Path, minor: str) -> ContainerdBinaries:
    return ContainerdBinaries(bin_dir / "containerd", bin_dir / "ctr", minor)


def _unpacked_install(minor: str) -> ContainerdBinaries:
    """packaging/host/install-deps unpacks newer Debian builds (1.7 from trixie, 2.1 from sid)
    into /opt/bulkhead/containerd-<minor>; BULKHEAD_CONTAINERD<NN>_DIR overrides the place."""
    variable = f"BULKHEAD_CONTAINERD{minor.replace('.', '')}_DIR"
    base = Path(os.environ.get(variable, f"/opt/bulkhead/containerd-{minor}"))
    return _in_dir(base / "usr" / "bin", minor)


# The development installs of `make install`, by minor version.
DEV_INSTALLS: dict[str, ContainerdBinaries] = {
    "1.6": _in_dir(Path("/usr/bin"), "1.6"),
    "1.7": _unpacked_install("1.7"),
    "2.1": _unpacked_install("2.1"),
}


def dev_versions() -> dict[str, str]:
    """Development installs present, e.g. {"1.6": "1.6.20~ds1", "2.1": "2.1.9+unknown"}."""
    found = {minor: inst.exact_version() for minor, inst in DEV_INSTALLS.items()}
    return {minor: exact for minor, exact in found.items() if exact}


def dev_install(version: str) -> ContainerdBinaries:
    """The development install of a minor version, or an error naming how to get it."""
    inst = DEV_INSTALLS.get(version)
    if inst is None:
        raise ContainerdError(
            f"unknown containerd version {version!r}; known: {sorted(DEV_INSTALLS)}")
    if inst.exact_version() is None:
        raise ContainerdError(
            f"containerd {version} is not installed at {inst.bin_dir} (`make install` installs "
            f"it in a Bulkhead development tree; elsewhere {POINT_AT_ONE})")
    return inst


def search_path() -> str:
    """PATH, then the system directories (a root shell or a service may have a short PATH)."""
    entries = [*os.environ.get("PATH", "").split(":"), *SYSTEM_PATH.split(":")]
    return ":".join(d for d in dict.fromkeys(entries) if d)


def _ctr_for(containerd: Path) -> Path:
    """The ctr next to containerd (same release), else the one on PATH."""
    beside = containerd.parent / "ctr"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("ctr", path=search_path())
    return Path(found) if found else beside


def given(containerd: str | os.PathLike[str]) -> ContainerdBinaries:
    """The binary named by --containerd (a path, or a name looked up on PATH)."""
    name = os.fspath(containerd)
    found = shutil.which(name, path=search_path()) if "/" not in name else name
    path = Path(found or name)
    if not os.access(path, os.X_OK) or path.is_dir():
        raise ContainerdError(f"containerd binary {name} not found or not executable")
    binaries = ContainerdBinaries(path.absolute(), _ctr_for(path.absolute()))
    if not os.access(binaries.ctr, os.X_OK):
        raise ContainerdError(f"no ctr next to {path} nor on PATH: the demo runs its container "
                              "with ctr")
    if binaries.exact_version() is None:
        raise ContainerdError(f"`{path} --version` reports no containerd version")
    return binaries


def on_path() -> ContainerdBinaries | None:
    """The node's own containerd: `containerd` on PATH, if it runs and reports its version."""
    found = shutil.which("containerd", path=search_path())
    if found is None:
        return None
    binaries = ContainerdBinaries(Path(found), _ctr_for(Path(found)))
    return binaries if binaries.exact_version() else None


def find_containerd(containerd: str | os.PathLike[str] | None = None,
                    version: str | None = None) -> ContainerdBinaries:
    """The containerd to run: the given binary, else the development install of a version,
    else the node's own on PATH, else any development install (DEFAULT_VERSION first)."""
    if containerd:
        return given(containerd)
    if version:
        return dev_install(version)
    own = on_path()
    if own is not None:
        return own
    for minor in sorted(DEV_INSTALLS, key=lambda v: (v != DEFAULT_VERSION, v)):
        if DEV_INSTALLS[minor].exact_version():
            return DEV_INSTALLS[minor]
    raise ContainerdError(
        f"no containerd found: looked for `containerd` on PATH ({search_path()}) and in the "
        f"development installs ({', '.join(str(i.bin_dir) for i in DEV_INSTALLS.values())}); "
        f"{POINT_AT_ONE}")
