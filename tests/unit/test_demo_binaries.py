"""Which containerd the demo and the doctor's smoke test run: the given binary, else the node's
own on PATH, else a development install; errors name what was looked for and the flag."""

from __future__ import annotations

from pathlib import Path

import pytest
from bulkhead.demo import binaries
from bulkhead.demo.errors import ContainerdError


def fake_containerd(bin_dir: Path, version: str = "v1.7.24", ctr: bool = True) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    binary = bin_dir / "containerd"
    binary.write_text(f"#!/bin/sh\necho containerd github.com/containerd/containerd {version} "
                      "abc123\n")
    binary.chmod(0o755)
    if ctr:
        (bin_dir / "ctr").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "ctr").chmod(0o755)
    return binary


@pytest.fixture
def only_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH and the system dirs hold no containerd, nor do the development installs."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "node"))
    monkeypatch.setattr(binaries, "SYSTEM_PATH", str(empty))
    monkeypatch.setattr(binaries, "DEV_INSTALLS", {
        "1.6": binaries.ContainerdBinaries(empty / "containerd", empty / "ctr", "1.6")})
    return tmp_path / "node"


def test_the_given_binary_and_the_ctr_beside_it(tmp_path: Path) -> None:
    binary = fake_containerd(tmp_path / "opt" / "bin", "v2.1.4")
    found = binaries.find_containerd(binary)
    assert (found.containerd, found.ctr) == (binary, binary.parent / "ctr")
    assert found.exact_version() == "2.1.4"


def test_the_node_containerd_on_path(only_path: Path) -> None:
    binary = fake_containerd(only_path)
    found = binaries.find_containerd()
    assert found.containerd == binary and found.exact_version() == "1.7.24"


def test_ctr_from_path_when_none_is_beside_containerd(only_path: Path, tmp_path: Path) -> None:
    binary = fake_containerd(tmp_path / "lone", ctr=False)
    fake_containerd(only_path)
    assert binaries.find_containerd(binary).ctr == only_path / "ctr"


def test_nothing_found_names_where_it_looked_and_the_flag(only_path: Path) -> None:
    with pytest.raises(ContainerdError) as err:
        binaries.find_containerd()
    text = str(err.value)
    assert f"`containerd` on PATH ({only_path}" in text
    assert "--containerd PATH" in text and "make install" not in text


def test_a_given_binary_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(ContainerdError, match="not found or not executable"):
        binaries.find_containerd(tmp_path / "containerd")


def test_a_binary_without_a_version(tmp_path: Path) -> None:
    binary = fake_containerd(tmp_path, "garbage")
    with pytest.raises(ContainerdError, match="reports no containerd version"):
        binaries.find_containerd(binary)


def test_a_development_install_must_be_of_its_minor(tmp_path: Path) -> None:
    binary = fake_containerd(tmp_path, "v1.6.20")
    assert binaries.ContainerdBinaries(binary, tmp_path / "ctr", "1.6").exact_version()
    assert binaries.ContainerdBinaries(binary, tmp_path / "ctr", "1.7").exact_version() is None
