"""pytest fixtures for CRI tests (loaded by tests/conftest.py as a plugin): one CRI-enabled
private containerd per version per session, with its own CNI network and the pause and demo
images in k8s.io, and a `cri` fixture per test that fails the test on anything it leaked."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bulkhead.devenv import cni
from bulkhead.devenv.containerd import (
    INSTALLS,
    PAUSE_IMAGE,
    PrivateContainerd,
    available_versions,
    reap_stale_instances,
)

from cri.client import CriClient, PodDefaults
from cri.leaks import CriBaseline, assert_no_cri_leaks, remove_leftovers

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = "docker.io/bulkhead/demo:latest"
PAUSE_IMAGE_TAR = Path(
    os.environ.get("BULKHEAD_PAUSE_IMAGE", "/usr/local/share/bulkhead/pause-image.tar")
)
VERSIONS = tuple(INSTALLS)


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
    if PAUSE_IMAGE_TAR.is_file():
        return PAUSE_IMAGE_TAR
    out = tmp_path_factory.mktemp("pause-image") / "pause-image.tar"
    builder = REPO / "packaging" / "demo-image" / "build"
    subprocess.run(["/usr/bin/python3", str(builder), "--image", "pause", "--out", str(out)],
                   check=True)
    return out


def _start_cri(version: str, images: list[Path]) -> Iterator[CriEnv]:
    """One CRI-enabled instance for the whole session; skipped when it cannot exist here."""
    if os.geteuid() != 0:
        pytest.skip("private containerd instances need root")
    if version not in available_versions():
        pytest.skip(f"containerd {version} is not installed (`make install`)")
    reap_stale_instances()
    instance = PrivateContainerd(name=f"pytest-cri-{version}-{os.getpid()}", version=version,
                                 enable_cri=True, cri_images=images)
    instance.start()
    client = CriClient(instance.address, PodDefaults(cgroup_parent=instance.cgroup_parent))
    try:
        client.wait_ready()
        yield CriEnv(instance, client)
    finally:
        client.close()
        instance.stop()


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


@pytest.fixture(params=VERSIONS, ids=[f"containerd{v}" for v in VERSIONS])
def cri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CriEnv]:
    """Runs the test once against each containerd version's CRI, with the leak check."""
    env: CriEnv = request.getfixturevalue("cri" + str(request.param).replace(".", ""))
    yield from checked(env, tmp_path)


@pytest.fixture
def cri_17(cri17: CriEnv, tmp_path: Path) -> Iterator[CriEnv]:
    """containerd 1.7's CRI alone (for handler comparisons), with the leak check."""
    yield from checked(cri17, tmp_path)
