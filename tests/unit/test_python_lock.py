"""The one lock (requirements/lock.txt) holds every Python distribution any install path takes,
each within the range pyproject.toml (or requirements/inputs.in) allows, and every install path
installs from it with its hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from guestimage.lock import canonical, read_lock
from guestimage.steps import BuildError
from guestimage.wheels import wheel_requirements
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _inputs() -> list[str]:
    lines = (REPO / "requirements" / "inputs.in").read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


@pytest.mark.parametrize("source", ["dependencies", "test extra", "build-system", "inputs.in"])
def test_every_requirement_is_locked_within_its_range(source: str) -> None:
    reqs = {"dependencies": PYPROJECT["project"]["dependencies"],
            "test extra": PYPROJECT["project"]["optional-dependencies"]["test"],
            "build-system": PYPROJECT["build-system"]["requires"],
            "inputs.in": _inputs()}[source]
    pins = read_lock(LOCK)
    for line in reqs:
        req = Requirement(line)
        pin = pins.get(canonical(req.name))
        assert pin is not None, f"{req.name} ({source}) is not in {LOCK.name}: run `make lock`"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{LOCK.name} pins {req.name}=={pin.version}, outside {source}'s `{line}`")


def test_the_guest_wheels_come_from_the_lock_with_hashes() -> None:
    pins = read_lock(LOCK)
    for line in wheel_requirements():
        name, version = line.split()[0].split("==")
        assert version == pins[canonical(name)].version
        assert "--hash=sha256:" in line


def test_protobuf_is_at_least_the_gencode() -> None:
    """The committed _pb2 modules refuse an older protobuf runtime at import."""
    gencode = set()
    for pb2 in [*REPO.glob("wire/bulkhead_wire/proto/*_pb2.py"), *REPO.glob("tests/cri/*_pb2.py")]:
        m = re.search(r"^# Protobuf Python Version: (\S+)$", pb2.read_text(), re.M)
        assert m, pb2
        gencode.add(tuple(int(x) for x in m.group(1).split(".")))
    locked = tuple(int(x) for x in read_lock(LOCK)["protobuf"].version.split(".")[:3])
    assert locked >= max(gencode)


def test_every_install_path_uses_the_lock() -> None:
    make = (REPO / "Makefile").read_text()
    assert "pip install -q --require-hashes -r $(LOCK)" in make
    # The package itself goes in without resolving anything (its dependencies are the lock's).
    assert "--no-build-isolation --no-deps --no-index" in make
    assert not re.search(r"pip install (?!-q --require-hashes|-q --no-build-isolation)", make)


def test_a_malformed_lock_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "lock.txt"
    bad.write_text("tomlkit>=0.13\n")
    with pytest.raises(BuildError, match="is not `name==version --hash"):
        read_lock(bad)
    bad.write_text("tomlkit==0.15.3\n")
    with pytest.raises(BuildError, match="is not `name==version --hash"):
        read_lock(bad)
    bad.write_text(f"tomlkit==0.15.3 \\\n    --hash=sha256:{'a' * 64}\n    # via bulkhead\n")
    assert read_lock(bad)["tomlkit"].hashes == ("a" * 64,)
