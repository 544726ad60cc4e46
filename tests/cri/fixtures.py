"""pytest fixtures for CRI tests (loaded by tests/conftest.py as a plugin): one CRI-enabled
private containerd per version per session, with its own CNI network and the pause and demo
images in k8s.io, and a `cri` fixture per test that fails the test on anything it leaked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import cni
from harness.containerd import PAUSE_IMAGE, PrivateContainerd
from session_instances import DEMO_IMAGE, EACH_VERSION, image_tar, of_this_version, session_instance

from cri.client import CriClient, PodDefaults
from cri.leaks import CriBaseline, assert_no_cri_leaks, remove_leftovers


@dataclass
class CriEnv:
    """A CRI-enabled containerd and a client for it; what a CRI test works with."""

    instance: PrivateContainerd
    client: CriClient
    image: str = DEMO_IMAGE
    pause_image: str = PAUSE_IMAGE

    @property
    def version(self) -> str:
        return self.instance.version

    @property
    def network(self) -> cni.TestNetwork:
        assert self.instance.network is not None, "instance has no test network"
        return self.instance.network

    def log_tail(self, lines: int = 60) -> str:
        return self.instance.log_tail(lines)


@pytest.fixture(scope="session")
def pause_image_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed pause archive, or one built on the fly from the repo's builder."""
    return image_tar(tmp_path_factory, "pause")


def _start_cri(version: str, images: list[Path]) -> Iterator[CriEnv]:
    """The session's CRI-enabled instance of version, with these images, and a client for it."""
    with session_instance(version, "pytest-cri", enable_cri=True, cri_images=images) as instance:
        client = CriClient(instance.address, PodDefaults(cgroup_parent=instance.cgroup_parent))
        try:
            client.wait_ready()
            yield CriEnv(instance, client)
        finally:
            client.close()


@pytest.fixture(scope="session")
def cri16(pause_image_tar: Path, demo_image_tar: Path) -> Iterator[CriEnv]:
    yield from _start_cri("1.6", [pause_image_tar, demo_image_tar])


@pytest.fixture(scope="session")
def cri17(pause_image_tar: Path, demo_image_tar: Path) -> Iterator[CriEnv]:
    yield from _start_cri("1.7", [pause_image_tar, demo_image_tar])


@pytest.fixture(scope="session")
def cri21(pause_image_tar: Path, demo_image_tar: Path) -> Iterator[CriEnv]:
    yield from _start_cri("2.1", [pause_image_tar, demo_image_tar])


def checked(env: CriEnv, tmp_path: Path) -> Iterator[CriEnv]:
    """The env with pod logs under tmp_path; after the test: no pod, container, netns, veth,
    lease, rule or process may be left (leftovers are removed, then the test fails)."""
    baseline = CriBaseline.capture()
    env.client.defaults.log_root = tmp_path / "pods"
    try:
        yield env
    finally:
        env.client.defaults.log_root = None
    try:
        assert_no_cri_leaks(env.instance, env.client, baseline)
    finally:
        remove_leftovers(env.instance, env.client)


@pytest.fixture(**EACH_VERSION)
def cri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CriEnv]:
    """Runs the test once against each containerd version's CRI, with the leak check."""
    env: CriEnv = of_this_version(request, "cri")
    yield from checked(env, tmp_path)


@pytest.fixture
def cri_17(cri17: CriEnv, tmp_path: Path) -> Iterator[CriEnv]:
    """containerd 1.7's CRI alone (for handler comparisons), with the leak check."""
    yield from checked(cri17, tmp_path)
