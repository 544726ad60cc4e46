"""Run a containerd from a config file as a node would, except for the host paths it writes
(root, state, sockets, opt, NRI, the CRI plugin's CNI config dir), which go under one scratch
directory removed at the end."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from bulkhead.install import containerd_config as cc
from cri.client import CriClient, CriError
from harness.mounts import unmount_leftovers

# Host paths containerd creates that a test must not (checked before and after).
HOST_PATHS = ("/opt/containerd", "/var/lib/containerd", "/var/run/nri", "/opt/nri",
              "/run/containerd/containerd.sock", "/etc/cni/net.d")
OPT_PLUGIN = cc.OPT_PLUGIN
NRI_PLUGIN = cc.NRI_PLUGIN
# The plugin whose `cni` table names conf_dir (containerd 1.6 creates it), by config version.
CNI_PLUGIN = {version: layout.cri_plugin for version, layout in cc.LAYOUTS.items()}


@dataclass
class RunningContainerd:
    """One containerd process started from a config, and where it listens."""

    proc: subprocess.Popen[bytes]
    base: Path
    ctr: Path

    @property
    def address(self) -> Path:
        return self.base / "c.sock"

    @property
    def log(self) -> str:
        return (self.base / "containerd.log").read_text(errors="replace")

    def ctr_out(self, *args: str) -> str:
        return subprocess.run([str(self.ctr), "--address", str(self.address), *args],
                              capture_output=True, text=True, check=True, timeout=30).stdout

    def cri_config(self) -> dict[str, Any]:
        return cri_config(self.address)


def cri_config(address: Path) -> dict[str, Any]:
    """A CRI plugin's effective config, from Status(verbose) (it answers once loaded)."""
    with CriClient(address, timeout=10) as client:
        deadline = time.monotonic() + 20
        while True:
            try:
                info = client.status(verbose=True).info
                break
            except CriError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    config: dict[str, Any] = json.loads(info["config"])
    return config


def redirect_host_paths(config_text: str, base: Path) -> str:
    """The same config with every path containerd writes moved under base; nothing else."""
    doc = tomlkit.parse(config_text)
    doc["root"] = str(base / "root")
    doc["state"] = str(base / "state")
    for section, address in (("grpc", "c.sock"), ("ttrpc", "c.sock.ttrpc")):
        if section not in doc:
            doc[section] = tomlkit.table()
        doc[section]["address"] = str(base / address)
    plugins = doc.setdefault("plugins", tomlkit.table(is_super_table=True))
    plugins.setdefault(OPT_PLUGIN, tomlkit.table())["path"] = str(base / "opt")
    nri = plugins.setdefault(NRI_PLUGIN, tomlkit.table())
    nri["socket_path"] = str(base / "nri.sock")
    nri["plugin_path"] = str(base / "nri-plugins")
    nri["plugin_config_path"] = str(base / "nri-conf")
    cri = plugins.setdefault(CNI_PLUGIN[int(doc.get("version", 2))], tomlkit.table())
    cri.setdefault("cni", tomlkit.table())["conf_dir"] = str(base / "cni-conf")
    return tomlkit.dumps(doc)


def host_paths_present() -> set[str]:
    return {p for p in HOST_PATHS if Path(p).exists()}


@contextmanager
def containerd_from(binary: Path, config: Path, env: dict[str, str] | None = None
                    ) -> Iterator[RunningContainerd]:
    """Start `binary --config <config with host paths redirected>`, wait for its socket, and on
    exit stop it (TERM, then KILL) and remove everything it wrote."""
    base = Path(tempfile.mkdtemp(prefix="bhcc-", dir="/run"))  # short: unix socket paths
    run_config = base / "config.toml"
    run_config.write_text(redirect_host_paths(config.read_text(), base))
    log = (base / "containerd.log").open("wb")
    proc = subprocess.Popen([str(binary), "--config", str(run_config)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, cwd=base, env=env,
                            start_new_session=True)
    running = RunningContainerd(proc, base, binary.parent / "ctr")
    try:
        _wait_ready(running)
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        left = unmount_leftovers(base)
        if not left:  # never rmtree across a mount
            shutil.rmtree(base, ignore_errors=True)


def _wait_ready(running: RunningContainerd) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise RuntimeError(
                f"containerd exited {running.proc.returncode}:\n{running.log[-3000:]}")
        if running.address.exists():
            res = subprocess.run([str(running.ctr), "--address", str(running.address), "version"],
                                 capture_output=True, timeout=10, check=False)
            if res.returncode == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"containerd did not answer on {running.address}:\n{running.log[-3000:]}")
