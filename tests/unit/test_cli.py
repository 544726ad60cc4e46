"""`bulkhead demo` options: which private containerd the demo starts."""

from __future__ import annotations

import pytest
from bulkhead.cli import build_parser
from bulkhead.devenv.containerd import INSTALLS


@pytest.mark.parametrize("version", sorted(INSTALLS))
def test_demo_selects_containerd_version(version: str) -> None:
    args = build_parser().parse_args(["demo", "--containerd", version])
    assert args.containerd_version == version and not args.system_containerd


def test_demo_defaults_to_containerd_16_and_keeps_the_long_option() -> None:
    assert build_parser().parse_args(["demo"]).containerd_version == "1.6"
    args = build_parser().parse_args(["demo", "--containerd-version", "2.1"])
    assert args.containerd_version == "2.1"


def test_demo_rejects_unknown_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--containerd", "1.5"])
    assert "invalid choice: '1.5'" in capsys.readouterr().err
