"""The config of a private containerd (the demo's, the suite's) comes from the installer's
module: its schema for the version, its plugin ids and its handler table, which the doctor's
handler check accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from bulkhead.install import containerd_config as cc


def config(tmp_path: Path, version: str, **settings: Any) -> cc.PrivateConfig:
    return cc.PrivateConfig(tmp_path / "root", tmp_path / "state", tmp_path / "c.sock",
                            tmp_path / "c.sock.ttrpc", version, **settings)


@pytest.mark.parametrize(("version", "schema"), [("1.6.20~ds1", 2), ("1.7", 2), ("2.1.9", 3)])
def test_schema_and_handler_table(tmp_path: Path, version: str, schema: int) -> None:
    text = config(tmp_path, version, enable_cri=True).render()
    doc = tomllib.loads(text)
    assert doc["version"] == schema
    layout = cc.LAYOUTS[schema]
    runtimes = doc["plugins"][layout.cri_plugin]["containerd"]["runtimes"]
    assert runtimes[cc.RUNTIME_NAME] == cc.handler_settings()
    assert runtimes["runc"] == cc.runc_handler_settings()
    assert cc.handler_problems(text, version, restrict_oom_score_adj=True) == []


def test_cri_off_by_default(tmp_path: Path) -> None:
    doc = tomllib.loads(cc.render_private_config(tmp_path / "r", tmp_path / "s", tmp_path / "a",
                                                 tmp_path / "t", "2.1.4"))
    assert doc["disabled_plugins"] == [cc.CRI_GRPC_PLUGIN]
    assert set(doc["plugins"]) == {cc.OPT_PLUGIN, cc.NRI_PLUGIN}
    assert doc["grpc"]["address"] == str(tmp_path / "a")


def test_unsupported_version(tmp_path: Path) -> None:
    with pytest.raises(cc.ContainerdConfigError, match="not supported"):
        config(tmp_path, "1.5.0").render()
