"""What the instance fixtures of tests/conftest.py (plain containerd) and tests/cri/fixtures.py
(CRI-enabled containerd) share: one private containerd per version for the whole session, the
image archives they import, and the per-test fixture that runs a test once per version."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bulkhead.demo.container import DEMO_IMAGE
from harness.containerd import INSTALLS, PrivateContainerd, available_versions, reap_stale_instances

REPO = Path(__file__).resolve().parent.parent
VERSIONS = tuple(INSTALLS)  # every version the harness knows: 1.6, 1.7, 2.1
# For a function fixture that runs each test once per version (see of_this_version).
EACH_VERSION: dict[str, Any] = {"params": VERSIONS, "ids": [f"containerd{v}" for v in VERSIONS]}
IMAGE_TARS = {  # the archives `make install` installs, by the demo image builder's --image
    "demo": Path(os.environ.get("BULKHEAD_DEMO_IMAGE",
                                "/usr/local/share/bulkhead/demo-image.tar")),
    "pause": Path(os.environ.get("BULKHEAD_PAUSE_IMAGE",
                                 "/usr/local/share/bulkhead/pause-image.tar")),
}
__all__ = ["DEMO_IMAGE", "EACH_VERSION", "VERSIONS", "image_tar", "of_this_version",
           "session_instance"]


def image_tar(tmp_path_factory: pytest.TempPathFactory, image: str) -> Path:
    """The installed archive of image ("demo" or "pause"), or one built on the fly from the
    repo's builder."""
    installed = IMAGE_TARS[image]
    if installed.is_file():
        return installed
    out = tmp_path_factory.mktemp(f"{image}-image") / f"{image}-image.tar"
    builder = REPO / "packaging" / "demo-image" / "build"
    subprocess.run(["/usr/bin/python3", str(builder), "--image", image, "--out", str(out)],
                   check=True)
    return out


@contextlib.contextmanager
def session_instance(version: str, prefix: str = "pytest",
                     **options: Any) -> Iterator[PrivateContainerd]:
    """One private containerd (PrivateContainerd's options, e.g. enable_cri) for the whole
    session, stopped after it; skipped when it cannot exist here."""
    if os.geteuid() != 0:
        pytest.skip("private containerd instances need root")
    if version not in available_versions():
        pytest.skip(
            f"containerd {version} is not installed (`make install` installs 1.6 from bookworm, "
            "1.7 from trixie and 2.1 from sid into /opt/bulkhead/containerd-<version>)"
        )
    reap_stale_instances()  # leftovers of killed runs; live instances of other runs are kept
    instance = PrivateContainerd(name=f"{prefix}-{version}-{os.getpid()}", version=version,
                                 **options)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def of_this_version(request: pytest.FixtureRequest, prefix: str) -> Any:
    """In a fixture parametrized with EACH_VERSION: the session fixture <prefix><version>
    (containerd17, cri21, ...) of this test's version."""
    return request.getfixturevalue(prefix + str(request.param).replace(".", ""))
