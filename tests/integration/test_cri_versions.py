"""Bulkhead pods through the CRI of every containerd version (1.6, 1.7, 2.1): a few quick,
key behaviours each, so a version-specific break shows; test_cri_bulkhead.py has the full set
on 1.7 next to runc. Each Bulkhead pod boots a microVM (TCG here): keep this module short."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cri import lifecycle_checks, network_checks, resource_checks, stream_checks
from cri.fixtures import CriEnv
from ctrtools import GUEST

pytestmark = [pytest.mark.containerd, pytest.mark.cri, pytest.mark.vm]
HANDLER = "bulkhead"
CALL_TIMEOUT = 45.0  # a Bulkhead pod starts and stops in seconds; do not wait minutes on a hang


@pytest.fixture
def env(cri: CriEnv) -> Iterator[CriEnv]:
    """Each version's CRI (with the leak check) and a shorter call timeout."""
    if not (GUEST / "vmlinuz").is_file():
        pytest.fail(f"no guest image in {GUEST} (run `make install`)")
    saved, cri.client.timeout = cri.client.timeout, CALL_TIMEOUT
    try:
        yield cri
    finally:
        cri.client.timeout = saved


def test_pod_lifecycle(env: CriEnv) -> None:
    """Three containers in one VM, one stopped and removed alone, then the pod."""
    lifecycle_checks.check_three_containers(env, HANDLER)


def test_exec(env: CriEnv) -> None:
    stream_checks.check_exec_sync(env, HANDLER)


def test_network(env: CriEnv) -> None:
    """Two pods: each has its IP on the bridge and one fetches the other's page."""
    network_checks.check_pods_reach_each_other(env, HANDLER)


def test_small_memory_pod_refused(env: CriEnv) -> None:
    """No VM boots for this one: the pod's size is refused before."""
    resource_checks.check_small_memory_pod(env, HANDLER)
