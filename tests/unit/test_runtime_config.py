"""The runtime config file: values are checked and a bad one is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from bulkhead import config


def test_rootfs_defaults_to_layered_and_takes_shared(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert config.load(str(path)).rootfs == "layered"
    path.write_text('[bulkhead]\nrootfs = "shared"\n')
    assert config.load(str(path)).rootfs == "shared"


def test_a_bad_rootfs_mode_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('rootfs = "cached"\n')
    with pytest.raises(config.ConfigError, match=r"rootfs must be layered or shared, not 'cached'"):
        config.load(str(path))
