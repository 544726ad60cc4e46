"""`bulkhead demo` options: which containerd binary the demo's private instance runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from bulkhead.cli import build_parser
from bulkhead.demo import cli as demo_cli
from bulkhead.demo.binaries import DEV_INSTALLS


def _passed(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> dict[str, object]:
    """What `bulkhead demo ARGV` hands run_demo."""
    seen: dict[str, object] = {}

    def fake(**kwargs: object) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(demo_cli, "run_demo", fake)
    args = build_parser().parse_args(["demo", *argv])
    assert demo_cli.run(args) == 0
    return seen


def test_demo_takes_a_containerd_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "containerd"
    seen = _passed(monkeypatch, ["--containerd", str(binary)])
    assert (seen["containerd"], seen["containerd_version"]) == (str(binary), None)
    assert not seen["use_system_containerd"]


def test_demo_finds_containerd_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """No flag: the node's containerd on PATH, else a development install (find_containerd)."""
    seen = _passed(monkeypatch, [])
    assert (seen["containerd"], seen["containerd_version"]) == (None, None)


@pytest.mark.parametrize("version", sorted(DEV_INSTALLS))
def test_demo_selects_a_development_install(monkeypatch: pytest.MonkeyPatch,
                                            version: str) -> None:
    seen = _passed(monkeypatch, ["--containerd-version", version])
    assert (seen["containerd"], seen["containerd_version"]) == (None, version)
    seen = _passed(monkeypatch, ["--containerd", version])  # the older spelling still works
    assert (seen["containerd"], seen["containerd_version"]) == (None, version)


def test_demo_rejects_unknown_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--containerd-version", "1.5"])
    assert "invalid choice: '1.5'" in capsys.readouterr().err


def test_demo_names_a_missing_binary(capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    image.write_bytes(b"")
    args = argparse.Namespace(system_containerd=False, runtime="r", image=image, timeout=1.0,
                              containerd=str(tmp_path / "nope"), containerd_version=None)
    assert demo_cli.run(args) == 1
    assert f"containerd binary {tmp_path / 'nope'} not found" in capsys.readouterr().out
