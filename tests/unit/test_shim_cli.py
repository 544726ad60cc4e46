"""Shim command-line parsing, grouping keys and socket address hashing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bulkhead.shim.flags import UsageError, parse
from bulkhead.shim.grouping import BundleError, read_annotations, sandbox_key, socket_path
from bulkhead_wire.proto import task_pb2


def test_parse_start_argv_of_containerd() -> None:
    a = parse(["-namespace", "ns1", "-address", "/run/c.sock", "-publish-binary",
               "/usr/bin/containerd", "-id", "t1", "-debug", "start"])
    assert (a.namespace, a.address, a.publish_binary, a.id, a.debug, a.action) == (
        "ns1", "/run/c.sock", "/usr/bin/containerd", "t1", True, "start")


def test_parse_go_flag_forms_and_unknown_flags() -> None:
    a = parse(["--namespace=x", "-id=y", "-bundle", "/b", "-future-flag", "delete"])
    assert (a.namespace, a.id, a.bundle, a.action) == ("x", "y", "/b", "delete")
    assert parse(["-v"]).version
    assert parse(["-info"]).info


def test_parse_missing_value() -> None:
    with pytest.raises(UsageError, match="-id"):
        parse(["-id"])


def test_socket_hash_matches_containerd() -> None:
    """sha256 of join(address, namespace, key), lowercase hex, under /run/containerd/s."""
    want = hashlib.sha256(b"/run/containerd/containerd.sock/default/abc").hexdigest()
    assert socket_path("/run/containerd/containerd.sock", "default", "abc") == \
        f"/run/containerd/s/{want}"


def write_spec(tmp_path: Path, annotations: dict[str, str] | None) -> str:
    spec: dict[str, object] = {"ociVersion": "1.0.2", "process": {"args": ["sh"]}}
    if annotations is not None:
        spec["annotations"] = annotations
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return str(tmp_path)


def test_grouping(tmp_path: Path) -> None:
    assert sandbox_key("c1", read_annotations(write_spec(tmp_path, None))) == ("c1", False)
    pod = {"io.kubernetes.cri.container-type": "container",
           "io.kubernetes.cri.sandbox-id": "sb1"}
    assert sandbox_key("c1", pod) == ("sb1", True)
    sandbox = {"io.kubernetes.cri.container-type": "sandbox",
               "io.kubernetes.cri.sandbox-id": "sb1"}
    assert sandbox_key("sb1", sandbox) == ("sb1", False)


def test_malformed_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="malformed"):
        read_annotations(str(tmp_path))
    with pytest.raises(BundleError, match="no such file"):
        read_annotations(str(tmp_path / "missing"))


SHIM = "containerd-shim-bulkhead-v2"


def shim_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run the shim's entry point the way containerd does (cwd = bundle)."""
    return subprocess.run([sys.executable, "-m", "bulkhead.shim.main", *args], cwd=cwd,
                          input=b"", capture_output=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_start_with_malformed_config_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{broken")
    res = shim_command("-namespace", "ns", "-address", str(tmp_path / "c.sock"), "-id", "x",
                       "start", cwd=tmp_path)
    assert res.returncode == 1
    assert b"malformed OCI spec" in res.stderr and b"config.json" in res.stderr
    assert res.stdout == b"" and not (tmp_path / "address").exists()


def test_start_joining_a_missing_sandbox_fails_clearly(tmp_path: Path) -> None:
    write_spec(tmp_path, {"io.kubernetes.cri.container-type": "container",
                          "io.kubernetes.cri.sandbox-id": "no-such-sandbox"})
    res = shim_command("-namespace", "ns", "-address", str(tmp_path / "c.sock"), "-id", "x",
                       "start", cwd=tmp_path)
    assert res.returncode == 1 and b"no-such-sandbox" in res.stderr


def test_delete_is_idempotent_and_reports_137(tmp_path: Path) -> None:
    write_spec(tmp_path, None)
    for _ in range(2):
        res = shim_command("-namespace", "ns-unit", "-address", str(tmp_path / "c.sock"),
                           "-id", "gone", "-bundle", str(tmp_path), "delete", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        resp = task_pb2.DeleteResponse.FromString(res.stdout)
        assert resp.exit_status == 137 and resp.exited_at.seconds > 0


def test_version_flag(tmp_path: Path) -> None:
    res = shim_command("-v", cwd=tmp_path)
    assert res.returncode == 0 and b"io.containerd.bulkhead.v2" in res.stdout


def test_hand_written_delete_response_matches_protobuf() -> None:
    from bulkhead.shim.delete import encode_delete_response
    from bulkhead_wire.proto import task_pb2

    for ns in (1_796_072_792_804_894_776, 1_796_072_792_000_000_000, 0):
        want = task_pb2.DeleteResponse(exit_status=137)
        want.exited_at.FromNanoseconds(ns)
        assert task_pb2.DeleteResponse.FromString(encode_delete_response(137, ns)) == want
