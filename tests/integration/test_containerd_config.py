"""`bulkhead containerd-config` against real config files: the defaults of containerd 1.6, 1.7
and 2.1 and a hand-written file per format are merged (dry run, apply, backup, idempotence),
then that containerd starts from the merged file and its CRI plugin knows the handler."""

from __future__ import annotations

import copy
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from bulkhead import cli
from bulkhead.install import containerd_config as cc
from config_containerd import containerd_from, host_paths_present
from harness.containerd import INSTALLS, available_versions

pytestmark = pytest.mark.containerd

USER_FILES = {
    2: """\
# Hand-written node config.  Comments must survive.
version = 2
oom_score = -999            # keep containerd alive under pressure

[debug]
  level = "info"

[plugins."io.containerd.grpc.v1.cri"]
  max_container_log_line_size = 32768   # long JSON lines
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      # cgroupfs on this host
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

[timeouts]
  "io.containerd.timeout.shim.cleanup" = "7s"
""",
    3: """\
# Hand-written node config for containerd 2.x.  Comments must survive.
version = 3
oom_score = -999

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'   # the default, said out loud
  [plugins.'io.containerd.cri.v1.runtime']
    max_container_log_line_size = 32768
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      # runc stays the default
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
""",
}


def _binary(version: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("starting containerd needs root")
    if version not in available_versions():
        pytest.skip(f"containerd {version} is not installed (`make install`)")
    return INSTALLS[version].containerd


def _original(version: str, source: str, binary: Path) -> str:
    if source == "user":
        return USER_FILES[cc.config_version_for(version)]
    return subprocess.run([str(binary), "config", "default"], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def _without_ours(text: str, version: str) -> dict[str, Any]:
    """The parsed config less what the merge owns (the handler and restrict_oom_score_adj)."""
    doc = copy.deepcopy(tomllib.loads(text))
    cri = doc.get("plugins", {}).get(cc.LAYOUTS[cc.config_version_for(version)].cri_plugin, {})
    cri.pop("restrict_oom_score_adj", None)
    cri.get("containerd", {}).get("runtimes", {}).pop("bulkhead", None)
    return doc


def _run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = cli.main(["containerd-config", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.parametrize("source", ["default", "user"])
@pytest.mark.parametrize("version", list(INSTALLS))
def test_merge_then_containerd_loads_the_handler(
    version: str, source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = _binary(version)
    original = _original(version, source, binary)
    etc = tmp_path / "etc" / "containerd"
    etc.mkdir(parents=True)
    path = etc / "config.toml"
    path.write_text(original)
    args = ("--config", str(path), "--containerd", str(binary))

    rc, diff = _run_cli(capsys, *args, "--dry-run")
    assert rc == 0 and diff.startswith(f"--- {path}\n+++ {path}\n")
    assert path.read_text() == original and os.listdir(etc) == ["config.toml"]
    removed = [ln for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    assert all("restrict_oom_score_adj" in ln for ln in removed), removed
    assert any("runtimes.bulkhead]" in ln for ln in diff.splitlines() if ln.startswith("+"))

    rc, said = _run_cli(capsys, *args, "--apply")
    assert rc == 0 and "merged runtime `bulkhead`" in said
    merged = path.read_text()
    backups = [p for p in etc.iterdir() if p.name.startswith("config.toml.bak.")]
    assert len(backups) == 1 and backups[0].read_text() == original
    assert str(backups[0]) in said
    # comments and every other setting survive, in place
    for line in original.splitlines():
        if "restrict_oom_score_adj" not in line:
            assert line in merged.splitlines(), f"lost {line!r}"
    assert _without_ours(merged, version) == _without_ours(original, version)
    assert cc.handler_problems(merged, cc.detect_containerd_version(str(binary))) == []

    rc, said = _run_cli(capsys, *args, "--apply")
    assert rc == 0 and "nothing changed" in said
    assert path.read_text() == merged and len(os.listdir(etc)) == 2
    rc, diff = _run_cli(capsys, *args, "--dry-run")
    assert rc == 0 and "no change" in diff

    before = host_paths_present()
    with containerd_from(binary, path) as running:
        config = running.cri_config()
        plugins = running.ctr_out("plugins", "ls")
        base, pid = running.base, running.proc.pid
    runtime = config["containerd"]["runtimes"]["bulkhead"]
    assert runtime["runtimeType"] == cc.RUNTIME_TYPE
    assert runtime["privileged_without_host_devices"] is True
    assert runtime["PodAnnotations"] == list(cc.ANNOTATION_GLOBS)
    assert config["restrictOOMScoreAdj"] is True  # root here lacks CAP_SYS_RESOURCE
    cri_rows = [ln.split() for ln in plugins.splitlines() if ln.split()[1:2] == ["cri"]]
    assert cri_rows and cri_rows[0][-1] == "ok", plugins
    if source == "user":  # the user's own setting reached the CRI plugin too
        assert config.get("maxContainerLogSize", config.get("maxContainerLogLineSize")) == 32768, (
            sorted(config))
    # stopped and gone: the process, its scratch dirs, and nothing new on the host
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not base.exists()
    assert host_paths_present() == before
