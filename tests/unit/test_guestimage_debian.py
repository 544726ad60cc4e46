"""Guest image builder: apt's output parsed, and the Depends closure chosen from it."""

from __future__ import annotations

import pytest
from guestimage.debian import (
    Package,
    choose_alternative,
    parse_depends,
    parse_depends_graph,
    parse_stanzas,
    resolve_closure,
)
from guestimage.steps import BuildError

SHOW = """Package: libc6
Version: 2.36-9+deb12u10
Architecture: amd64
Depends: libgcc-s1
SHA256: aa11
Size: 2757936
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: media-types
Version: 10.0.0
Architecture: all
Size: 26256
"""

# The shape of `apt-cache depends --recurse`: " |" joins the next alternative, four-space lines
# under a dependency are providers of it, <name> is a virtual package.
DEPENDS = """libpython3.11-stdlib
 |Depends: media-types
  Depends: mime-support
  Depends: libc6
crun
  Depends: libc6
  Depends: libsystemd0
    libelogind0
 |PreDepends: <awk>
    mawk
    gawk
  PreDepends: dpkg:any
<awk>
libc6
  Depends: libgcc-s1
"""


def test_parse_stanzas_joins_continuation_lines() -> None:
    libc, media = parse_stanzas(SHOW)
    assert libc["Package"] == "libc6" and libc["Version"] == "2.36-9+deb12u10"
    assert libc["Description"].splitlines() == [
        "GNU C Library: Shared libraries",
        "Contains the standard libraries that are used by nearly all programs on",
        "the system.",
    ]
    assert media == {"Package": "media-types", "Version": "10.0.0", "Architecture": "all",
                     "Size": "26256"}
    assert parse_stanzas("") == [] and parse_stanzas("\n\n") == []


def test_parse_depends_drops_versions_and_qualifiers() -> None:
    field = "libc6 (>= 2.34), python3:any (>= 3.11~) | python3-minimal [amd64], <!nocheck> dpkg"
    assert parse_depends(field) == [["libc6"], ["python3", "python3-minimal"], ["dpkg"]]
    assert parse_depends("") == []


def test_parse_depends_graph() -> None:
    graph = parse_depends_graph(DEPENDS)
    assert graph["libpython3.11-stdlib"] == [
        [("media-types", []), ("mime-support", [])],
        [("libc6", [])],
    ]
    assert graph["crun"] == [
        [("libc6", [])],
        [("libsystemd0", ["libelogind0"])],
        [("awk", ["mawk", "gawk"]), ("dpkg", [])],
    ]
    assert graph["awk"] == [] and graph["libc6"] == [[("libgcc-s1", [])]]


def rec(name: str, arch: str = "amd64") -> dict[str, str]:
    return {"Package": name, "Version": "1.0", "Architecture": arch, "SHA256": f"{name}-sha",
            "Size": "10"}


def test_closure_prefers_chosen_alternatives_and_skips_excluded() -> None:
    graph = parse_depends_graph(DEPENDS)
    records = {n: rec(n) for n in ("libpython3.11-stdlib", "media-types", "mime-support",
                                   "libc6", "libgcc-s1", "crun", "libelogind0", "mawk", "gawk")}
    pkgs = resolve_closure(["libpython3.11-stdlib", "crun"], {"dpkg"}, graph, records)
    names = [p.name for p in pkgs]
    # First alternatives; a name apt has no record of is met by its first provider in name
    # order (gawk before mawk); excluded dpkg is left out; the result is sorted by name.
    assert names == ["crun", "gawk", "libc6", "libelogind0", "libgcc-s1",
                     "libpython3.11-stdlib", "media-types"]
    # Excluding a name excludes satisfying it through its providers too.
    pkgs = resolve_closure(["crun"], {"dpkg", "libsystemd0", "awk"}, graph, records)
    assert [p.name for p in pkgs] == ["crun", "libc6", "libgcc-s1"]
    assert pkgs[0] == Package("crun", "1.0", "amd64", "crun-sha", 10)


def test_choose_alternative() -> None:
    records = {n: rec(n) for n in ("a", "b", "p1", "p2")}
    group = [("v", ["p2", "p1"]), ("a", []), ("b", [])]
    assert choose_alternative(group, [], set(), records) == "p1"  # providers sorted
    assert choose_alternative(group, ["b"], set(), records) == "b"  # already selected wins
    assert choose_alternative(group, [], {"p1", "p2", "a"}, records) == "b"
    assert choose_alternative(group, [], {"p1", "p2", "a", "b"}, records) is None


def test_closure_fails_when_nothing_is_installable() -> None:
    graph = {"root": [[("missing", [])]], "other": [[("gone", [])]]}
    with pytest.raises(BuildError, match="'missing' of root"):
        resolve_closure(["root"], set(), graph, {"root": rec("root")})
    # A dependency whose every alternative is excluded is dropped on purpose.
    assert [p.name for p in resolve_closure(["other"], {"gone"}, graph,
                                            {"other": rec("other")})] == ["other"]


def test_deb_name_escapes_the_epoch() -> None:
    assert Package("perl", "1:5.36", "all", "", 0).deb_name == "perl_1%3a5.36_all.deb"
