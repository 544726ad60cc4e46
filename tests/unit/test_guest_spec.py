"""The OCI spec rewrite for the guest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bulkhead.sandbox.guest_spec import (
    SpecError,
    for_guest,
    load_spec,
    vm_wide_sysctls,
    wants_new_network_namespace,
)
from bulkhead_agent import vm_setup


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


def test_a_layered_root_is_the_one_the_agent_assembles() -> None:
    out = for_guest(spec(), "c1", layered=True)
    assert out["root"]["path"] == "/run/bulkhead/layers/c1/root"


def test_lone_containers_new_network_namespace_is_the_vms() -> None:
    """ctr and nerdctl ask for a new netns: QEMU's own on the host, the VM's in the guest."""
    lone = spec()
    lone["linux"]["namespaces"] = [{"type": "pid"}, {"type": "network"}]  # type: ignore[index]
    assert wants_new_network_namespace(lone) and not wants_new_network_namespace(spec())
    assert for_guest(lone, "c1")["linux"]["namespaces"] == [
        {"type": "pid"}, {"type": "network"}, {"type": "cgroup"}]
    assert for_guest(lone, "c1", vm_network=True)["linux"]["namespaces"] == [
        {"type": "pid"}, {"type": "cgroup"}]


@pytest.mark.parametrize("text,why", [("{", "malformed OCI spec"), ("[]", "JSON object"),
                                      ('{"process": {}}', "process.args")])
def test_load_spec_errors_name_the_problem(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(SpecError, match=why):
        load_spec(str(tmp_path))


def test_load_spec_ok(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(spec()))
    assert load_spec(str(tmp_path))["process"]["args"] == ["sh"]


def test_sysctls_of_shared_namespaces_go_to_the_vm() -> None:
    """containerd 2.x puts net.ipv4.ip_unprivileged_port_start in the pod's spec: crun
    refuses it without a network namespace of the container's, so the VM takes it."""
    spec = {"process": {"args": ["pause"]},
            "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"},
                                     {"type": "ipc"}, {"type": "pid"}],
                      "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0",
                                 "kernel.shm_rmid_forced": "1", "vm.swappiness": "1"}}}
    assert vm_wide_sysctls(spec) == {"net.ipv4.ip_unprivileged_port_start": "0"}
    out = for_guest(spec, "c1")
    assert out["linux"]["sysctl"] == {"kernel.shm_rmid_forced": "1", "vm.swappiness": "1"}


def test_agent_writes_vm_sysctls_and_names_bad_ones(tmp_path: Path) -> None:
    (tmp_path / "net/ipv4").mkdir(parents=True)
    vm_setup.set_sysctls({"net.ipv4.ip_unprivileged_port_start": "0"}, str(tmp_path))
    assert (tmp_path / "net/ipv4/ip_unprivileged_port_start").read_text() == "0"
    with pytest.raises(vm_setup.SetupError, match=r"sysctl 'net\.\.\.x'"):
        vm_setup.set_sysctls({"net...x": "1"}, str(tmp_path))
    with pytest.raises(vm_setup.SetupError, match="sysctl net.core.nope=.1.: No such file"):
        vm_setup.set_sysctls({"net.core.nope": "1"}, str(tmp_path))
