"""Debian packages: resolve the Depends closure with apt-cache, download and unpack the .debs.

Nothing is installed on the host: apt only answers questions and downloads, dpkg-deb only unpacks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from guestimage.digests import builder_digest, hash_strings, sha256_file
from guestimage.files import rmtree
from guestimage.steps import BuildError, StaleIndex, log, run

ARCH = "amd64"
KERNEL_META = "linux-image-amd64"
APT_LISTS = Path("/var/lib/apt/lists")
APT_CONFIG = (
    Path("/etc/apt/sources.list"),
    Path("/etc/apt/sources.list.d"),
    Path("/etc/apt/preferences"),
    Path("/etc/apt/preferences.d"),
)


@dataclass(frozen=True)
class Package:
    """One Debian binary package version as apt knows it."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int

    @property
    def deb_name(self) -> str:
        """The file name apt-get download gives this package."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Parse deb822 records (as apt-cache show prints them)."""
    records: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if cur:
                records.append(cur)
            cur, key = {}, ""
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            cur[key] = value.strip()
    if cur:
        records.append(cur)
    return records


def parse_depends(field: str) -> list[list[str]]:
    """'a (>= 1) | b:any, c' -> [['a', 'b'], ['c']] (versions and arch qualifiers dropped)."""
    groups = []
    for group in field.split(","):
        alts = []
        for alt in group.split("|"):
            name = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", alt).strip().split(":")[0]
            if name:
                alts.append(name)
        if alts:
            groups.append(alts)
    return groups


DEPENDS_FLAGS = tuple(
    "--no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances".split()
)

# One dependency alternative: (package name, providers if it is also or only virtual).
Alternative = tuple[str, list[str]]


def apt_depends_graph(roots: list[str]) -> dict[str, list[list[Alternative]]]:
    """Depends/Pre-Depends groups of roots and everything they may pull in (one apt-cache call)."""
    text = run("apt-cache depends", ["apt-cache", "depends", "--recurse", *DEPENDS_FLAGS, *roots])
    return parse_depends_graph(text)


def parse_depends_graph(text: str) -> dict[str, list[list[Alternative]]]:
    """Package -> dependency groups from `apt-cache depends` output ('|' joins alternatives)."""
    graph: dict[str, list[list[Alternative]]] = {}
    groups: list[list[Alternative]] = []
    last: Alternative | None = None
    or_next = False
    for line in text.splitlines():
        if not line.startswith(" "):
            groups = graph.setdefault(line.strip().strip("<>").split(":")[0], [])
            last, or_next = None, False
            continue
        m = re.match(r"^ ([ |])(PreDepends|Depends): (\S+)", line)
        if m:
            last = (m.group(3).strip("<>").split(":")[0], [])
            if or_next and groups:
                groups[-1].append(last)
            else:
                groups.append([last])
            or_next = m.group(1) == "|"
        elif line.startswith("    ") and last is not None:
            last[1].append(line.strip().strip("<>").split(":")[0])
    return graph


def apt_show(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Candidate-version records of the real packages among names (one apt-cache call)."""
    proc = subprocess.run(  # noqa: UP022 (stderr is dropped, stdout parsed)
        ["apt-cache", "show", "--no-all-versions", *sorted(set(names))],
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    records: dict[str, dict[str, str]] = {}
    for rec in parse_stanzas(proc.stdout):
        if rec.get("Architecture") in (ARCH, "all"):
            records.setdefault(rec.get("Package", ""), rec)
    return records


def to_package(rec: dict[str, str]) -> Package:
    """Package from an apt-cache record."""
    return Package(
        rec["Package"],
        rec["Version"],
        rec["Architecture"],
        rec.get("SHA256", ""),
        int(rec.get("Size", "0")),
    )


def resolve_closure(
    roots: list[str],
    excluded: set[str],
    graph: dict[str, list[list[Alternative]]],
    records: dict[str, dict[str, str]],
) -> list[Package]:
    """Depends + Pre-Depends closure of roots (alternatives and providers chosen stably)."""
    chosen: list[str] = []
    pending = list(roots)
    while pending:
        name = pending.pop(0)
        if name in chosen:
            continue
        chosen.append(name)
        for group in graph.get(name, []):
            pick = choose_alternative(group, chosen + pending, excluded, records)
            if pick is None:
                if not all(alt in excluded for alt, _prov in group):
                    raise BuildError(
                        f"resolve: no installable package for dependency "
                        f"'{' | '.join(a for a, _p in group)}' of {name}"
                    )
            elif pick not in chosen and pick not in pending:
                pending.append(pick)
    return sorted((to_package(records[n]) for n in chosen), key=lambda p: p.name)


def choose_alternative(
    group: list[Alternative],
    selected: list[str],
    excluded: set[str],
    records: dict[str, dict[str, str]],
) -> str | None:
    """The package satisfying one dependency group (None when every choice is excluded)."""
    candidates: list[str] = []
    for alt, providers in group:
        if alt in excluded:
            continue
        if alt in records:
            candidates.append(alt)
        candidates.extend(p for p in sorted(providers) if p not in excluded and p in records)
    for c in candidates:
        if c in selected:
            return c
    return candidates[0] if candidates else None


def apt_fingerprint() -> str:
    """Cheap identity of apt's package lists and configuration (sizes and mtimes)."""
    parts = []
    paths = [p for p in APT_LISTS.glob("*_Packages*")] + [p for p in APT_CONFIG if p.exists()]
    for base in paths:
        for p in [base] if base.is_file() else sorted(base.glob("*")):
            st = p.stat()
            parts.append(f"{p} {st.st_size} {st.st_mtime_ns}")
    return hash_strings(sorted(parts))


@dataclass
class Resolution:
    """The resolved package set: root filesystem closure plus the kernel package."""

    packages: list[Package]
    kernel: Package


def resolve_packages(
    cache: Path, roots: list[str], excluded: set[str], allow_update: bool = True
) -> Resolution:
    """Resolve (or reuse the cached resolution for unchanged apt lists) the package set."""
    key = hash_strings([apt_fingerprint(), builder_digest(), *roots, "!", *sorted(excluded)])
    cache_file = cache / "resolved.json"
    try:
        data = json.loads(cache_file.read_text())
        if data.get("key") == key:
            return Resolution([Package(**p) for p in data["packages"]], Package(**data["kernel"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    records = apt_show(roots + [KERNEL_META])
    missing = [n for n in roots + [KERNEL_META] if n not in records]
    if missing and allow_update:
        log(f"apt does not know {', '.join(missing)}: running apt-get update")
        run("apt-get update", ["apt-get", "update", "-q"])
        return resolve_packages(cache, roots, excluded, allow_update=False)
    if missing:
        raise BuildError(
            f"resolve: apt knows no package {', '.join(missing)} "
            "(packaging/guest/packages.txt; check /etc/apt/sources.list*)"
        )
    log("resolving the Debian package closure")
    graph = apt_depends_graph(roots)
    records.update(apt_show(graph))
    packages = resolve_closure(roots, excluded, graph, records)
    image_names = [
        g[0]
        for g in parse_depends(records[KERNEL_META].get("Depends", ""))
        if g[0].startswith("linux-image-")
    ]
    kernel_rec = apt_show(image_names[:1]).get(image_names[0]) if image_names else None
    if kernel_rec is None:
        raise BuildError(f"resolve: cannot find the kernel image package {KERNEL_META} depends on")
    res = Resolution(packages, to_package(kernel_rec))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(
        json.dumps(
            {
                "key": key,
                "packages": [asdict(p) for p in res.packages],
                "kernel": asdict(res.kernel),
            },
            indent=1,
        )
    )
    tmp.replace(cache_file)
    return res


def ensure_debs(pkgs: list[Package], debs: Path, tmp_root: Path) -> dict[str, Path]:
    """Make sure every package's .deb is cached with the expected SHA-256; return the paths."""
    debs.mkdir(parents=True, exist_ok=True)
    paths = {p.name: debs / p.deb_name for p in pkgs}
    missing = [p for p in pkgs if not paths[p.name].exists()]
    if missing:
        log(f"downloading {len(missing)} Debian package(s) with apt-get download")
        dl = Path(tempfile.mkdtemp(prefix="debs-", dir=tmp_root))
        try:
            try:
                run(
                    "apt-get download",
                    [
                        "apt-get",
                        "download",
                        "-q",
                        "-o",
                        "APT::Sandbox::User=root",
                        *[f"{p.name}={p.version}" for p in missing],
                    ],
                    cwd=dl,
                )
            except BuildError as e:
                raise StaleIndex(str(e)) from e
            for p in missing:
                src = dl / p.deb_name
                if not src.exists():
                    raise BuildError(
                        f"apt-get download: {p.name} {p.version} did not produce {p.deb_name}"
                    )
                src.replace(paths[p.name])
        finally:
            rmtree(dl)
    for p in pkgs:
        if p.sha256 and (
            paths[p.name].stat().st_size != p.size or sha256_file(paths[p.name]) != p.sha256
        ):
            paths[p.name].unlink()
            raise BuildError(
                f"verify: cached {p.deb_name} does not match apt's SHA-256; removed it, run again"
            )
    return paths


def extract_deb(deb: Path, dest: Path) -> None:
    """Unpack a .deb's files (no maintainer scripts) into dest, as `dpkg -x` does."""
    run(f"unpack {deb.name}", ["dpkg-deb", "-x", str(deb), str(dest)])
