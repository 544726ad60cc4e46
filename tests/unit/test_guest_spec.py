"""The OCI spec rewrite for the guest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bulkhead.sandbox.guest_spec import SpecError, for_guest, load_spec


def spec() -> dict[str, object]:
    return {
        "ociVersion": "1.1.0-rc.1",
        "process": {"args": ["sh"], "apparmorProfile": "x"},
        "root": {"path": "/var/lib/x/rootfs"},
        "hooks": {"prestart": [{"path": "/usr/bin/true"}]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts",
                    "options": ["rbind", "ro"]}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network",
                                                   "path": "/proc/1/ns/net"}],
                  "cgroupsPath": "/default/c1"},
    }


def test_for_guest_drops_host_only_parts() -> None:
    out = for_guest(spec(), "c1")
    assert out["root"]["path"] == "rootfs"
    assert out["ociVersion"].startswith("1.0")
    assert "hooks" not in out and "apparmorProfile" not in out["process"]
    assert [m["destination"] for m in out["mounts"]] == ["/proc", "/etc/hosts"]
    # The pod's network is the VM's: a namespace joined by path is the guest's own.
    assert out["linux"]["namespaces"] == [{"type": "pid"}, {"type": "cgroup"}]
    assert out["linux"]["cgroupsPath"] == "/bulkhead/c1"


@pytest.mark.parametrize("text,why", [("{", "malformed OCI spec"), ("[]", "JSON object"),
                                      ('{"process": {}}', "process.args")])
def test_load_spec_errors_name_the_problem(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(SpecError, match=why):
        load_spec(str(tmp_path))


def test_load_spec_ok(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(spec()))
    assert load_spec(str(tmp_path))["process"]["args"] == ["sh"]
