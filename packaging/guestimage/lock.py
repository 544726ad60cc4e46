"""The project's one Python lock (requirements/lock.txt): the pinned version and hashes of each
distribution, read so the guest's wheels are exactly the host's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from guestimage.layout import LOCK
from guestimage.steps import BuildError

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
_HASH = re.compile(r"^--hash=sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class Pin:
    """One locked distribution: name, exact version and the sha256 of each of its files."""

    name: str
    version: str
    hashes: tuple[str, ...]

    def requirement(self) -> str:
        """A line `pip --require-hashes` takes."""
        return " ".join([f"{self.name}=={self.version}",
                         *(f"--hash=sha256:{h}" for h in self.hashes)])


def canonical(name: str) -> str:
    """PEP 503 name, so `Foo_Bar` in one file matches `foo-bar` in another."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, Pin]:
    """Every pin of a lock in pip's hash format (continued lines joined), by canonical name."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins: dict[str, Pin] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, _, rest = line.partition(" --hash=")
        pin = _PIN.match(spec.split(";", 1)[0].strip())  # (a marker after `;` is not ours)
        words = f"--hash={rest}".split() if rest else []
        hashes = [m.group(1) for m in map(_HASH.match, words) if m]
        if pin is None or not hashes or len(hashes) != len(words):
            raise BuildError(f"{path}: `{line[:60]}` is not `name==version --hash=sha256:...`")
        name = canonical(pin.group(1))
        if name in pins:
            raise BuildError(f"{path}: {name} is pinned twice")
        pins[name] = Pin(name, pin.group(2), tuple(hashes))
    return pins


def pins_for(names: list[str], path: Path = LOCK) -> list[Pin]:
    """The lock's pin of each name, in the order given; a name the lock lacks is an error."""
    pins = read_lock(path)
    missing = [n for n in names if canonical(n) not in pins]
    if missing:
        raise BuildError(f"{path} has no pin for {', '.join(missing)}: run `make lock`")
    return [pins[canonical(n)] for n in names]
