"""CNI checks: the plugins a Bulkhead pod network uses and a network config list. Pods need
both (CNI sets up their namespace; the shim bridges it into the VM); lone containers do not."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkhead.doctor.context import Context
from bulkhead.doctor.report import Finding, ok, warning
from bulkhead.install.containerd_config import PrivateConfig

SYSTEM_CONFIG = Path("/etc/containerd/config.toml")
PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CONTAINERD_BIN_DIR = Path("/opt/cni/bin")  # containerd's and ctr's default
DEBIAN_BIN_DIR = PrivateConfig.cni_bin_dir  # containernetworking-plugins on Debian
CONF_DIR = Path("/etc/cni/net.d")
EXAMPLE_CONFLIST = {
    "cniVersion": "1.0.0", "name": "bulkhead",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


@dataclass
class CniDirs:
    """Where containerd's CRI plugin looks for plugins and configs, and which config said so."""

    bin_dirs: list[Path]
    conf_dir: Path
    source: str
    version: int = 2  # the config's schema: 3 (containerd 2.x) names the key bin_dirs


def cni_table(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The CRI cni table of a v2 (1.x) or v3 (2.x) containerd config, {} if absent."""
    plugins = doc.get("plugins", {})
    for plugin in ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"):
        table = plugins.get(plugin, {}).get("cni")
        if isinstance(table, Mapping):
            return table
    return {}


def cni_dirs(config_path: Path = SYSTEM_CONFIG) -> CniDirs:
    """The CNI directories a containerd on this config uses (its defaults without one)."""
    try:
        doc = tomllib.loads(config_path.read_text())
        source = str(config_path)
    except (OSError, tomllib.TOMLDecodeError):
        doc, source = {}, "containerd's defaults"
    table = cni_table(doc)
    bins = table.get("bin_dirs") or ([table["bin_dir"]] if table.get("bin_dir") else [])
    return CniDirs([Path(b) for b in bins] or [CONTAINERD_BIN_DIR],
                   Path(table.get("conf_dir") or CONF_DIR), source, int(doc.get("version", 2)))


def missing_plugins(bin_dir: Path) -> list[str]:
    return [p for p in PLUGINS if not (bin_dir / p).is_file()]


def check_plugins(ctx: Context) -> Iterator[Finding]:
    """bridge, host-local, loopback and portmap in a directory containerd searches."""
    dirs = cni_dirs()
    where = ", ".join(map(str, dirs.bin_dirs))
    for bin_dir in dirs.bin_dirs:
        if not missing_plugins(bin_dir):
            yield ok("cni plugins", f"{', '.join(PLUGINS)} in {bin_dir} (from {dirs.source})")
            return
    if DEBIAN_BIN_DIR not in dirs.bin_dirs and not missing_plugins(DEBIAN_BIN_DIR):
        key = f'bin_dirs = ["{DEBIAN_BIN_DIR}"]' if dirs.version >= 3 else \
            f'bin_dir = "{DEBIAN_BIN_DIR}"'
        yield warning("cni plugins", f"the plugins are in {DEBIAN_BIN_DIR} but containerd "
                                     f"looks in {where} (from {dirs.source}): pods get no "
                                     "network", f"{key}   in the CRI plugin's "
                                     f"cni table of {SYSTEM_CONFIG}")
        return
    missing = missing_plugins(dirs.bin_dirs[0])
    yield warning("cni plugins", f"{', '.join(missing)} missing from {where}: pods get no "
                                 "network (lone containers do not need CNI)",
                  "apt-get install containernetworking-plugins   (Debian: into "
                  f"{DEBIAN_BIN_DIR}; point containerd's CRI cni bin_dir there)")


def network_configs(conf_dir: Path) -> list[Path]:
    """The config files libcni would load: *.conflist, *.conf, *.json that parse as JSON."""
    found = []
    try:
        entries = sorted(conf_dir.iterdir())
    except OSError:
        return []
    for path in entries:
        if path.suffix in (".conflist", ".conf", ".json"):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and ("plugins" in doc or "type" in doc):
                found.append(path)
    return found


def check_config(ctx: Context) -> Iterator[Finding]:
    """A network config list in the directory containerd reads."""
    dirs = cni_dirs()
    configs = network_configs(dirs.conf_dir)
    if configs:
        yield ok("cni config", f"{len(configs)} network config(s) in {dirs.conf_dir}: "
                               f"{configs[0].name} is used")
        return
    yield warning("cni config", f"no network config in {dirs.conf_dir} (from {dirs.source}): "
                                "pods cannot start (lone containers do not need one)",
                  f"write {dirs.conf_dir}/10-bulkhead.conflist:\n"
                  + json.dumps(EXAMPLE_CONFLIST, separators=(",", ":")))
