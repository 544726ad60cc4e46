"""containerd's inputs that name host paths (issue 15, part 5): a pod's sandbox-id annotation,
the namespace and ids never make a path outside /run/bulkhead, and `start` says which one was
wrong before it binds or spawns anything."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from bulkhead.paths import RUN_DIR, sandbox_dir
from bulkhead.shim import start
from bulkhead.shim.flags import ShimArgs

BAD = ("..", ".", "", "a/b", "../../etc", "x\nlevel=error", "a" * 256)


@pytest.mark.parametrize("bad", BAD)
def test_sandbox_dir_refuses_names_that_leave_run_dir(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid sandbox id"):
        sandbox_dir("k8s.io", bad)
    with pytest.raises(ValueError, match="invalid namespace id"):
        sandbox_dir(bad, "pod")


def test_sandbox_dir_of_plain_names() -> None:
    assert sandbox_dir("k8s.io", "abc") == os.path.join(RUN_DIR, "k8s.io", "abc")


@pytest.mark.parametrize("bad", ["../../etc", "a/b", ".."])
def test_start_refuses_a_sandbox_id_annotation_that_is_a_path(
        bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"annotations": {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": bad}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    args = ShimArgs(namespace="k8s.io", id="c1", address="/run/containerd/containerd.sock")
    with pytest.raises(start.StartError, match="invalid sandbox id"):
        start.run(args)
