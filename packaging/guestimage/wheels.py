"""The wheels layer: the wheels named in packaging/guest/wheels.txt, at the versions and hashes of
the project's lock, downloaded once, unpacked, compiled.

pip only downloads (for the guest's platform, checking every hash); it never runs inside the image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from guestimage.bytecode import check_bytecode, compile_bytecode
from guestimage.digests import hash_strings, sha256_file
from guestimage.files import rmtree
from guestimage.layout import GUEST, GUEST_PYTHONPATH, read_list
from guestimage.lock import pins_for
from guestimage.steps import BuildError, log, run


@dataclass(frozen=True)
class Wheel:
    """A downloaded wheel."""

    name: str
    version: str
    file: str
    sha256: str


def wheel_requirements() -> list[str]:
    """`name==version --hash=...` of each distribution in wheels.txt, from the lock."""
    names = [r[0] for r in read_list(GUEST / "wheels.txt")]
    for n in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", n):
            raise BuildError(f"wheels: `{n}` in wheels.txt is not a bare name (the lock pins it)")
    return [pin.requirement() for pin in pins_for(names)]


def pip_command() -> list[str]:
    """A pip that can download wheels (this interpreter's, Debian's, or pip3)."""
    for cand in ([sys.executable, "-m", "pip"], ["/usr/bin/python3", "-m", "pip"]):
        probe = subprocess.run([*cand, "--version"], capture_output=True)
        if probe.returncode == 0:
            return cand
    if shutil.which("pip3"):
        return ["pip3"]
    raise BuildError("wheels: no pip found (install python3-pip)")


def download_wheels(reqs: list[str], wheelhouse: Path, tmp_root: Path) -> Path:
    """Directory holding exactly the pinned wheels (downloaded once per requirements set)."""
    dest = wheelhouse / hash_strings(reqs)[:16]
    if dest.is_dir():
        return dest
    log(f"wheels: downloading {', '.join(r.split()[0] for r in reqs)}")
    dl = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=tmp_root))
    try:
        listed = dl / "requirements.txt"
        listed.write_text("".join(f"{r}\n" for r in reqs))
        target = "--platform manylinux2014_x86_64 --python-version 3.11 --implementation cp"
        only = "download --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes"
        run("pip download", [*pip_command(), *only.split(), *target.split(), "-d", str(dl),
                             "-r", str(listed)])
        listed.unlink()
        wheelhouse.mkdir(parents=True, exist_ok=True)
        for old in wheelhouse.iterdir():
            rmtree(old)
        dl.rename(dest)
    finally:
        rmtree(dl)
    return dest


def build_wheels_layer(layer: Path, base_root: Path, wheelhouse: Path, tmp_root: Path) -> None:
    """Unpack the pinned wheels and compile them with the guest python."""
    reqs = wheel_requirements()
    dl = download_wheels(reqs, wheelhouse, tmp_root)
    log("wheels layer: unpacking and compiling the wheels")
    work = Path(tempfile.mkdtemp(prefix="wheels-", dir=tmp_root))
    try:
        tree = work / "tree"
        tree.mkdir()
        wheels = []
        for whl in sorted(dl.glob("*.whl")):
            name, version = whl.name.split("-")[:2]
            wheels.append(Wheel(name, version, whl.name, sha256_file(whl)))
            with zipfile.ZipFile(whl) as z:
                for info in z.infolist():
                    target = tree / info.filename
                    if ".." in Path(info.filename).parts or info.filename.startswith("/"):
                        raise BuildError(f"wheels: unsafe path {info.filename} in {whl.name}")
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(info))
                    mode = (info.external_attr >> 16) & 0o777
                    os.chmod(target, mode if mode else 0o644)
        if len(wheels) != len(reqs):
            raise BuildError(
                f"wheels: expected {len(reqs)} wheels, pip downloaded {[w.file for w in wheels]}"
            )
        for p in sorted(tree.glob("*.data")):
            raise BuildError(
                f"wheels: {p.name} has a .data directory, which this builder does not handle"
            )
        compile_bytecode(base_root, tree, "/" + GUEST_PYTHONPATH, "compile wheels")
        check_bytecode(tree)
        (work / "wheels.json").write_text(json.dumps([asdict(w) for w in wheels], indent=1))
        rmtree(layer)
        work.rename(layer)
    finally:
        rmtree(work)
