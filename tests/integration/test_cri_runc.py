"""The CRI test infrastructure proven with the runc handler on containerd 1.6, 1.7 and 2.1:
pods on the private bridge, the CRI log format, exec/attach/port-forward streaming, pod
networking and hostPorts, DNS and hostname files, statuses, stats, and no leaks (the `cri`
fixture fails a test that leaves a pod, netns, veth, lease, rule or process behind)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cri import (
    lifecycle_checks,
    log_checks,
    network_checks,
    pod_tools,
    resource_checks,
    rootfs_checks,
    stream_checks,
    volume_checks,
)
from cri.fixtures import CriEnv
from harness import cni
from harness.containerd import PrivateContainerd, available_versions
from leaks import LeakBaseline, assert_no_leaks

pytestmark = [pytest.mark.containerd, pytest.mark.cri]
HANDLER = "runc"


def test_runtime_and_images(cri: CriEnv) -> None:
    lifecycle_checks.check_runtime(cri)


def test_log_file_format(cri: CriEnv) -> None:
    log_checks.check_log_file(cri, HANDLER)


def test_tty_log(cri: CriEnv) -> None:
    log_checks.check_tty_log(cri, HANDLER)


def test_exit_codes_and_reasons(cri: CriEnv) -> None:
    lifecycle_checks.check_exit_codes(cri, HANDLER)


def test_stop_and_remove_pod(cri: CriEnv) -> None:
    lifecycle_checks.check_stop_and_remove(cri, HANDLER)


def test_exec_sync(cri: CriEnv) -> None:
    stream_checks.check_exec_sync(cri, HANDLER)


def test_exec_streams(cri: CriEnv) -> None:
    stream_checks.check_exec_streams(cri, HANDLER)


def test_exec_tty_resize(cri: CriEnv) -> None:
    stream_checks.check_exec_tty(cri, HANDLER)


def test_attach(cri: CriEnv) -> None:
    stream_checks.check_attach(cri, HANDLER)


def test_port_forward(cri: CriEnv) -> None:
    network_checks.check_port_forward(cri, HANDLER)


def test_pod_ip_answers_from_host(cri: CriEnv) -> None:
    network_checks.check_pod_ip(cri, HANDLER)


def test_pods_reach_each_other(cri: CriEnv) -> None:
    network_checks.check_pods_reach_each_other(cri, HANDLER)


def test_host_port(cri: CriEnv) -> None:
    network_checks.check_host_port(cri, HANDLER)


def test_dns_hostname_hosts(cri: CriEnv) -> None:
    network_checks.check_dns_hostname_hosts(cri, HANDLER)


def test_stats(cri: CriEnv) -> None:
    resource_checks.check_stats(cri, HANDLER)


def test_update_resources(cri: CriEnv) -> None:
    resource_checks.check_update_resources(cri, HANDLER)


def test_security_context(cri: CriEnv) -> None:
    resource_checks.check_security_context(cri, HANDLER)


def test_mounts(cri: CriEnv, tmp_path: Path) -> None:
    volume_checks.check_mounts(cri, HANDLER, tmp_path)


def test_reopen_log(cri: CriEnv) -> None:
    log_checks.check_reopen_log(cri, HANDLER)


def test_annotations_reach_the_spec(cri: CriEnv) -> None:
    lifecycle_checks.check_annotations(cri, HANDLER)


def test_network_config(cri: CriEnv) -> None:
    """The instance's conflist: its own bridge and subnet, leases in its dirs, no NAT, no
    gateway mode (so no host-wide ip_forward), portmap with the portMappings capability."""
    net = cri.network
    (conf,) = list(cri.instance.cni_conf_dir.iterdir())
    bridge, portmap = json.loads(conf.read_text())["plugins"]
    assert (bridge["bridge"], bridge["isGateway"], bridge["ipMasq"]) == (net.bridge, False, False)
    assert bridge["ipam"]["dataDir"] == str(cri.instance.cni_ipam_dir)
    assert bridge["ipam"]["ranges"] == [[{"subnet": str(net.subnet), "gateway": str(net.gateway)}]]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    assert cni.all_test_bridges()[net.bridge] == cri.instance.name


@pytest.mark.parametrize("version", ["1.6", "1.7", "2.1"])
def test_cri_instance_stop_cleans_up_running_pods(version: str, pause_image_tar: Path,
                                                  demo_image_tar: Path, tmp_path: Path) -> None:
    """stop() with pods still running (and a hostPort mapped) removes them through CRI, then
    the bridge, netns mounts, leases, CNI cache files and portmap rules."""
    if version not in available_versions():
        pytest.skip(f"containerd {version} is not installed")
    baseline = LeakBaseline.capture()
    instance = PrivateContainerd(name=pod_tools.unique_name(f"cri-stop{version}"), version=version,
                                 enable_cri=True, cri_images=[pause_image_tar, demo_image_tar])
    with instance:
        net = instance.network
        assert net is not None
        pod_tools.leave_running_pod(instance, tmp_path)
        assert cni.bridge_ports(net.bridge) and cni.rules_of(net)
    assert net.bridge not in cni.all_test_bridges()
    assert cni.rules_of(net) == [] and cni.cache_files(net) == []
    assert not instance.root_dir.exists() and not instance.run_dir.exists()
    assert_no_leaks(instance, baseline)


def test_volume_coherence(cri: CriEnv, tmp_path: Path) -> None:
    rootfs_checks.check_volume_coherence(cri, HANDLER, tmp_path)


def test_writable_layer_stats(cri: CriEnv) -> None:
    rootfs_checks.check_writable_layer(cri, HANDLER)
