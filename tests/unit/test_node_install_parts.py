"""The node installer's parts that need no node: the ledger (create, change with backup, undo),
symlinks resolved inside the host root, the label patch request, the shim scan, the default
runtime config."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from pathlib import Path

import pytest
from bulkhead import config as config_mod
from bulkhead.install import node, node_host, node_k8s
from bulkhead.install.ledger import MANIFEST, HostRoot, InstallError, Ledger


def tree(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        what = (os.readlink(path) if path.is_symlink() else path.read_bytes()
                if path.is_file() else "dir")
        out[str(path.relative_to(root))] = (st.st_mode, what)
    return out


def test_symlinks_resolve_inside_the_host_root(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var/run").symlink_to("/run")  # absolute, as on Debian
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")  # relative (merged /usr)
    host = HostRoot(tmp_path)
    assert host.at("/var/run/x.sock") == tmp_path / "run/x.sock"
    assert host.at("/lib/modules") == tmp_path / "usr/lib/modules"
    assert host.at("/var/run") == tmp_path / "var/run"  # the last part is not followed
    assert host.resolve("/var/run") == tmp_path / "run"


def test_install_and_undo_restore_the_tree(tmp_path: Path) -> None:
    (tmp_path / "etc/containerd").mkdir(parents=True)
    config = tmp_path / "etc/containerd/config.toml"
    config.write_text("# user's\n")
    config.chmod(0o600)
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    (tmp_path / "usr/local/bin/tool").symlink_to("/elsewhere/tool")
    before = tree(tmp_path)
    host = HostRoot(tmp_path)

    ledger = Ledger.begin(host)
    assert [e.path for e in ledger.entries] == ["/var", "/var/lib", "/var/lib/bulkhead"]
    assert ledger.put_file("/etc/containerd/config.toml", b"merged\n")
    assert ledger.put_file("/etc/bulkhead/config.toml", b"# new\n")
    assert ledger.put_symlink("/usr/local/bin/tool", "/opt/bulkhead/venv/bin/tool")
    assert not ledger.put_file("/etc/containerd/config.toml", b"merged\n")  # again: no-op
    assert config.read_bytes() == b"merged\n" and config.stat().st_mode & 0o777 == 0o600
    changed = ledger.find("/etc/containerd/config.toml")
    assert changed is not None and changed.action == "changed" and changed.mode == 0o600
    assert host.at(changed.backup).read_text() == "# user's\n"

    reloaded = Ledger.load(host)
    assert reloaded is not None and reloaded.entries == ledger.entries
    assert reloaded.undo() == []
    assert tree(tmp_path) == before
    assert Ledger.load(host) is None


def test_undo_keeps_what_is_not_ours(tmp_path: Path) -> None:
    host = HostRoot(tmp_path)
    ledger = Ledger.begin(host)
    ledger.put_file("/etc/bulkhead/config.toml", b"x")
    (tmp_path / "etc/bulkhead/operator-notes").write_text("mine")
    problems = ledger.undo()
    assert problems == ["kept /etc/bulkhead: it holds files install did not put there",
                        "kept /etc: it holds files install did not put there"]
    assert (tmp_path / "etc/bulkhead/operator-notes").exists()
    # the manifest stays, so a later uninstall can finish the job
    assert (tmp_path / MANIFEST.lstrip("/")).exists()
    (tmp_path / "etc/bulkhead/operator-notes").unlink()
    again = Ledger.load(host)
    assert again is not None and again.undo() == []
    assert list(tmp_path.iterdir()) == []


def test_trees_copy_once_and_never_over_foreign_ones(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin/python").symlink_to("/usr/bin/python3")
    (src / "lib.py").write_text("x = 1\n")
    host = HostRoot(tmp_path / "node")
    (tmp_path / "node").mkdir()
    ledger = Ledger.begin(host)
    assert ledger.put_tree("/opt/b/venv", src)
    assert not ledger.put_tree("/opt/b/venv", src)
    assert os.readlink(tmp_path / "node/opt/b/venv/bin/python") == "/usr/bin/python3"
    (src / "lib.py").write_text("x = 2\n")  # a new image: copied again, still one entry
    assert ledger.put_tree("/opt/b/venv", src)
    assert (tmp_path / "node/opt/b/venv/lib.py").read_text() == "x = 2\n"
    assert [e.path for e in ledger.entries].count("/opt/b/venv") == 1
    (tmp_path / "node/opt/other").mkdir()
    with pytest.raises(InstallError, match="was not installed by"):
        ledger.put_tree("/opt/other", src)


def test_label_patch_and_request(tmp_path: Path) -> None:
    assert node_k8s.label_patch(True) == {"metadata": {"labels": {"bulkhead.io/runtime":
                                                                  "installed"}}}
    assert node_k8s.label_patch(False) == {"metadata": {"labels": {"bulkhead.io/runtime": None}}}
    account = tmp_path / "sa"
    account.mkdir()
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443",
           "NODE_NAME": "node-1"}
    assert node_k8s.in_cluster(env, account) is None  # no token yet
    (account / "token").write_text("tok\n")
    (account / "ca.crt").write_text("")
    cluster = node_k8s.in_cluster(env, account)
    assert cluster is not None and cluster.server == "https://[fd00::1]:443"
    req = node_k8s.label_request(cluster, "node-1", installed=False)
    assert req.get_method() == "PATCH"
    assert req.full_url == "https://[fd00::1]:443/api/v1/nodes/node-1"
    assert req.get_header("Content-type") == "application/merge-patch+json"
    assert req.get_header("Authorization") == "Bearer tok"
    assert isinstance(req.data, bytes)
    assert json.loads(req.data) == node_k8s.label_patch(False)


def test_label_skipped_outside_a_cluster(tmp_path: Path) -> None:
    said = node_k8s.set_label(True, environ={}, account=tmp_path)
    assert "skipped" in said and "kubectl label node <node> bulkhead.io/runtime=installed" in said


def test_live_shims_scan(tmp_path: Path) -> None:
    for pid, argv in ((10, [b"/usr/local/bin/containerd-shim-bulkhead-v2", b"-namespace", b"k"]),
                      (11, [b"/opt/bulkhead/venv/bin/python", b"-m", b"bulkhead.shim.daemon"]),
                      (12, [b"/usr/bin/containerd-shim-runc-v2", b"-id", b"x"]),
                      (13, [b"vim", b"containerd-shim-bulkhead-v2.txt"])):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (tmp_path / "self").mkdir()
    assert node_host.live_shims(tmp_path) == [10, 11]


def test_default_runtime_config_is_all_defaults() -> None:
    text = node.default_runtime_config()
    assert tomllib.loads(text) == {}
    uncommented = "\n".join(line[2:] for line in text.splitlines() if " = " in line)
    values = tomllib.loads(uncommented)
    assert values == dataclasses.asdict(config_mod.Config())


def test_tree_already_in_place(tmp_path: Path) -> None:
    """--host-root / on a machine installed by `make install`: the venv is the source itself."""
    (tmp_path / "opt/b/venv").mkdir(parents=True)
    ledger = Ledger.begin(HostRoot(tmp_path))
    assert not ledger.put_tree("/opt/b/venv", tmp_path / "opt/b/venv")
    assert ledger.find("/opt/b/venv") is None
