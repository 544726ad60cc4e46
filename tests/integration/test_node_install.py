"""`bulkhead node install | uninstall` on a scratch node: a host root on a tmpfs that exists only
in a private mount namespace, with a user's containerd config and the node's own containerd
1.7 binary. Install lands everything and merges the config, the "restart" starts that
containerd and CRI knows the handler, a second install changes nothing, uninstall leaves the
tree as it was (content, mode, owner and link target of every path) and nothing reaches the
real host."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bulkhead import config as config_mod
from bulkhead.install import containerd_config as cc
from bulkhead.install import ledger, node, node_host
from config_containerd import cri_config
from harness.containerd import INSTALLS, available_versions

pytestmark = pytest.mark.containerd

TESTS = Path(__file__).resolve().parents[1]
BULKHEAD = Path(sys.prefix) / "bin" / "bulkhead"
USER_CONFIG = """\
# containerd on this node: hand-tuned, keep these comments.
version = 2
oom_score = -999   # never the OOM killer's first choice

[plugins."io.containerd.grpc.v1.cri"]
  max_container_log_line_size = 32768
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""


@dataclass
class ScratchNode:
    """A tmpfs at `mnt` visible only in the mount namespace of process `pid`."""

    pid: int
    mnt: Path

    @property
    def host(self) -> Path:
        return self.mnt / "host"  # the node's / (the DaemonSet's /host)

    @property
    def scratch(self) -> Path:
        return self.mnt / "containerd"  # where the node's containerd writes

    def seen(self, path: Path) -> Path:
        """A path of the namespace, from out here."""
        return Path(f"/proc/{self.pid}/root{path}")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", *argv],
                             capture_output=True, text=True, timeout=120, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"{argv} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res


@pytest.fixture
def scratch_node() -> Iterator[ScratchNode]:
    if os.geteuid() != 0:
        pytest.skip("mount namespaces need root")
    if "1.7" not in available_versions():
        pytest.skip("containerd 1.7 is not installed (`make install`)")
    mnt = Path(tempfile.mkdtemp(prefix="bhnode-", dir="/run"))
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
         f"mount -t tmpfs -o mode=755 bhnode {mnt} && echo ready && exec sleep 600"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        node_ns = ScratchNode(holder.pid, mnt)
        try:
            yield node_ns
        finally:  # the scratch node's containerd, if a restart left one running
            node_ns.run(*_restart_helper(node_ns, "stop").split(), check=False)
    finally:
        holder.kill()
        holder.wait()
        os.rmdir(mnt)  # empty out here: the tmpfs was never visible


def _restart_helper(scratch: ScratchNode, action: str) -> str:
    return (f"{sys.executable} {TESTS / 'node_restart.py'} {action} --host {scratch.host} "
            f"--scratch {scratch.scratch}")


def _build_node(host: Path) -> None:
    """What a Debian 12 node brings that the installer looks at, plus things it must not touch."""
    (host / "etc/containerd").mkdir(parents=True)
    (host / "etc/containerd/config.toml").write_text(USER_CONFIG)
    (host / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (host / "etc/hostname").write_text("node-1\n")
    for d in ("usr/bin", "usr/local/bin", "var/lib/dpkg", "run"):
        (host / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/python3.11", host / "usr/bin/python3.11")
    shutil.copy2(INSTALLS["1.7"].containerd, host / "usr/bin/containerd")
    (host / "var/lib/dpkg/status").write_text("Package: containerd\n")
    (host / "var/run").symlink_to("/run")
    (host / "usr/local/bin/bulkhead").symlink_to("/opt/old-bulkhead/bin/bulkhead")  # stale
    os.chmod(host / "etc/containerd/config.toml", 0o600)


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root: kind, mode, owner, and content hash or link target."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                what: object = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    what = hashlib.file_digest(f, "sha256").hexdigest()
            else:
                what = "dir"
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, what)
    return out


def _runtimes(scratch: ScratchNode) -> dict[str, object]:
    socket = scratch.seen(scratch.scratch / "run" / "c.sock")
    runtimes: dict[str, object] = cri_config(socket)["containerd"]["runtimes"]
    return runtimes


def _containerd_pid(scratch: ScratchNode) -> int:
    return int(scratch.seen(scratch.scratch / "containerd.pid").read_text())


def test_install_then_uninstall_leaves_the_node_as_it_was(scratch_node: ScratchNode) -> None:
    scratch = scratch_node
    host_out = scratch.seen(scratch.host)  # the scratch node's root, from out here
    real_before = {p: os.path.lexists(p) for p in (ledger.MANIFEST, ledger.BACKUP_DIR,
                                                   node.RUNTIME_CONFIG, node.TEMPLATE_UNIT)}
    real_link = os.readlink("/usr/local/bin/bulkhead")
    scratch.run("mkdir", "-p", str(scratch.host), str(scratch.scratch))
    _build_node(host_out)
    before = _snapshot(host_out)
    common = ["--host-root", str(scratch.host)]
    restart = ["--restart-command", _restart_helper(scratch, "restart")]

    # install: everything lands, the config is merged, containerd restarted with the handler
    res = scratch.run(str(BULKHEAD), "node", "install", *common, *restart)
    assert "installed: runtime venv /opt/bulkhead/venv" in res.stdout
    assert "restarted containerd" in res.stdout
    assert "not built now" in res.stdout  # a scratch root is not PID 1's root
    assert "node label bulkhead.io/runtime=installed: skipped" in res.stdout
    assert "lacks /usr/bin/qemu-system-x86_64" in res.stderr  # a warning, not a failure
    venv = host_out / "opt/bulkhead/venv"
    assert ledger.tree_digest(venv) == ledger.tree_digest(Path(sys.prefix))
    assert (host_out / "usr/local/share/bulkhead/guest/manifest.json").read_bytes() == Path(
        "/usr/local/share/bulkhead/guest/manifest.json").read_bytes()
    for name in node.BIN_LINKS:
        assert os.readlink(host_out / "usr/local/bin" / name) == f"{node.VENV}/bin/{name}"
    backup = host_out / "var/lib/bulkhead/node-backup/usr/local/bin/bulkhead"
    assert os.readlink(backup) == "/opt/old-bulkhead/bin/bulkhead"
    merged = (host_out / "etc/containerd/config.toml").read_text()
    assert all(line in merged.splitlines() for line in USER_CONFIG.splitlines())
    assert cc.handler_problems(merged, "1.7.24") == []
    runtime_config = (host_out / "etc/bulkhead/config.toml").read_text()
    assert tomllib.loads(runtime_config) == {}  # every setting there, commented out
    assert all(f"# {f.name} = " in runtime_config for f in dataclasses.fields(config_mod.Config))
    assert (host_out / node.TEMPLATE_WANTS.lstrip("/")).is_symlink()
    manifest = json.loads((host_out / ledger.MANIFEST.lstrip("/")).read_text())
    assert manifest["facts"]["containerd_version"].startswith("1.7.")
    assert any(e["path"] == cc.DEFAULT_CONFIG and e["action"] == "changed"
               for e in manifest["entries"])
    runtimes = _runtimes(scratch)
    assert runtimes["bulkhead"]["runtimeType"] == cc.RUNTIME_TYPE  # type: ignore[index]
    first_pid = _containerd_pid(scratch)

    # install again: nothing changes, containerd is not restarted
    installed = _snapshot(host_out)
    res = scratch.run(str(BULKHEAD), "node", "install", *common, *restart)
    steps = res.stdout.splitlines()
    assert not [s for s in steps if s.startswith("installed:")], res.stdout
    assert not [s for s in steps if s.startswith("restarted")], res.stdout
    assert _snapshot(host_out) == installed
    assert _containerd_pid(scratch) == first_pid

    # uninstall: containerd restarted on the restored config, the tree as it was
    force = ["--force"] if node_host.live_shims() else []  # other runs' shims (not this node's)
    res = scratch.run(str(BULKHEAD), "node", "uninstall", *common, *restart, *force)
    assert "removed everything" in res.stdout and "restarted containerd" in res.stdout
    assert "bulkhead" not in _runtimes(scratch)
    assert _snapshot(host_out) == before
    res = scratch.run(str(BULKHEAD), "node", "uninstall", *common)
    assert "nothing to uninstall" in res.stdout

    # the real host saw none of it
    assert {p: os.path.lexists(p) for p in real_before} == real_before
    assert os.readlink("/usr/local/bin/bulkhead") == real_link
    assert os.listdir(scratch.mnt) == []
    last_pid = _containerd_pid(scratch)
    scratch.run(*_restart_helper(scratch, "stop").split())
    with pytest.raises(ProcessLookupError):
        os.kill(last_pid, 0)
