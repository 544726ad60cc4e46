"""Shim command-line parsing, grouping keys and socket address hashing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from bulkhead.shim.flags import UsageError, parse
from bulkhead.shim.grouping import BundleError, read_annotations, sandbox_key, socket_path


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
