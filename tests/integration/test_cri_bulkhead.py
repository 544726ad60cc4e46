"""CRI with the Bulkhead handler next to runc on containerd 1.7: the same behaviours as
test_cri_runc.py, each run once per handler, so a Bulkhead failure reads against a passing runc
baseline. Bulkhead pods boot real microVMs (TCG here): one VM per pod at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    stress_checks,
    volume_checks,
)
from cri.fixtures import CriEnv
from ctrtools import GUEST, qemu_pids

pytestmark = [pytest.mark.containerd, pytest.mark.cri]
HANDLERS = [pytest.param("runc", id="runc"),
            pytest.param("bulkhead", id="bulkhead", marks=pytest.mark.vm)]
CALL_TIMEOUT = 45.0  # a Bulkhead pod starts and stops in seconds; do not wait minutes on a hang


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name == "bulkhead" and not (GUEST / "vmlinuz").is_file():
        pytest.fail(f"no guest image in {GUEST} (run `make install`)")
    return name


@pytest.fixture
def env(cri_17: CriEnv) -> Iterator[CriEnv]:
    """containerd 1.7's CRI with a shorter call timeout (restored afterwards)."""
    saved, cri_17.client.timeout = cri_17.client.timeout, CALL_TIMEOUT
    try:
        yield cri_17
    finally:
        cri_17.client.timeout = saved


def test_log_file_format(env: CriEnv, handler: str) -> None:
    log_checks.check_log_file(env, handler)


def test_tty_log(env: CriEnv, handler: str) -> None:
    log_checks.check_tty_log(env, handler)


def test_exit_codes_and_reasons(env: CriEnv, handler: str) -> None:
    lifecycle_checks.check_exit_codes(env, handler)


def test_stop_and_remove_pod(env: CriEnv, handler: str) -> None:
    lifecycle_checks.check_stop_and_remove(env, handler)


def test_exec_sync(env: CriEnv, handler: str) -> None:
    stream_checks.check_exec_sync(env, handler)


def test_exec_streams(env: CriEnv, handler: str) -> None:
    stream_checks.check_exec_streams(env, handler)


def test_exec_tty_resize(env: CriEnv, handler: str) -> None:
    stream_checks.check_exec_tty(env, handler)


def test_attach(env: CriEnv, handler: str) -> None:
    stream_checks.check_attach(env, handler)


def test_port_forward(env: CriEnv, handler: str) -> None:
    network_checks.check_port_forward(env, handler)


def test_pod_ip_answers_from_host(env: CriEnv, handler: str) -> None:
    network_checks.check_pod_ip(env, handler)


def test_pods_reach_each_other(env: CriEnv, handler: str) -> None:
    network_checks.check_pods_reach_each_other(env, handler)


def test_host_port(env: CriEnv, handler: str) -> None:
    network_checks.check_host_port(env, handler)


def test_dns_hostname_hosts(env: CriEnv, handler: str) -> None:
    network_checks.check_dns_hostname_hosts(env, handler)


def test_stats(env: CriEnv, handler: str) -> None:
    resource_checks.check_stats(env, handler)


def test_update_resources(env: CriEnv, handler: str) -> None:
    resource_checks.check_update_resources(env, handler)


def test_security_context(env: CriEnv, handler: str) -> None:
    resource_checks.check_security_context(env, handler)


def test_mounts(env: CriEnv, handler: str, tmp_path: Path) -> None:
    volume_checks.check_mounts(env, handler, tmp_path)


def test_reopen_log(env: CriEnv, handler: str) -> None:
    log_checks.check_reopen_log(env, handler)


@pytest.mark.vm
def test_pod_is_one_vm(env: CriEnv) -> None:
    """A Bulkhead pod with two containers is one QEMU with its own kernel; none after stop."""
    if not (GUEST / "vmlinuz").is_file():
        pytest.fail(f"no guest image in {GUEST} (run `make install`)")
    before = qemu_pids()
    with pod_tools.running_pod(env, "bulkhead", "onevm") as pod:
        first = pod_tools.start(env, pod, "first", pod_tools.SLEEP)
        second = pod_tools.start(env, pod, "second", pod_tools.SLEEP)
        assert len(qemu_pids() - before) == 1
        kernels = {pod_tools.exec_ok(env.client, cid, "uname", "-r") for cid in (first, second)}
        assert len(kernels) == 1 and kernels != {os.uname().release + "\n"}, kernels
    pod_tools.wait_until("the VM to exit", lambda: not qemu_pids() - before, 30)


def test_three_containers_one_pod(env: CriEnv, handler: str) -> None:
    lifecycle_checks.check_three_containers(env, handler)


def test_shared_volume(env: CriEnv, handler: str, tmp_path: Path) -> None:
    volume_checks.check_shared_volume(env, handler, tmp_path)


def test_shared_dev_shm(env: CriEnv, handler: str) -> None:
    volume_checks.check_shm(env, handler)


def test_termination_message(env: CriEnv, handler: str, tmp_path: Path) -> None:
    log_checks.check_termination_message(env, handler, tmp_path)


def test_many_short_lived_containers_log(env: CriEnv, handler: str) -> None:
    stress_checks.check_many_short_logs(env, handler)


def test_short_lived_containers_lose_no_byte(env: CriEnv, handler: str) -> None:
    """500 for Bulkhead (issue 8's count); runc is the baseline that the checks are right."""
    stress_checks.check_short_lived_byte_counts(env, handler, 500 if handler == "bulkhead" else 100)


def test_parallel_pods(env: CriEnv, handler: str) -> None:
    stress_checks.check_parallel_pods(env, handler)


def test_chaos_kill_vm_or_shim(env: CriEnv, handler: str) -> None:
    stress_checks.check_chaos(env, handler)


def test_small_memory_pod_refused(env: CriEnv, handler: str) -> None:
    resource_checks.check_small_memory_pod(env, handler)


def test_volume_coherence(env: CriEnv, handler: str, tmp_path: Path) -> None:
    rootfs_checks.check_volume_coherence(env, handler, tmp_path)


def test_writable_layer_stats(env: CriEnv, handler: str) -> None:
    rootfs_checks.check_writable_layer(env, handler)
