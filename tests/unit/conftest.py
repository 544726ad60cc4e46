"""Fixtures the unit tests of the host's share share (real tmpfs mounts: root only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkhead.sandbox.mounts import mount_points_under
from bulkhead.sandbox.share import Share


@pytest.fixture
def sandbox_share(tmp_path: Path) -> Iterator[Share]:
    """A sandbox's share under a scratch state dir; afterwards nothing is mounted or left."""
    state = tmp_path / "state"
    state.mkdir()
    sh = Share(str(state))
    sh.create()
    try:
        yield sh
    finally:
        sh.remove()
        assert not mount_points_under(tmp_path) and not state.exists()
