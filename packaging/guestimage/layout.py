"""Where the builder's inputs are in this repository, and the fixed paths inside the guest.

Every other module takes its paths from here, so moving a file in the tree is a one-line change.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent  # packaging/guestimage
PACKAGING = PACKAGE.parent
ENTRY_POINT = PACKAGING / "build-guest-image"
GUEST = PACKAGING / "guest"
REPO = PACKAGING.parent
# The project's one Python lock: the guest's wheels take their versions and hashes from it.
LOCK = REPO / "requirements" / "lock.txt"
# Our packages, copied into the image as they are in the tree.
AGENT_SOURCES = {
    "bulkhead_wire": REPO / "wire" / "bulkhead_wire",
    "bulkhead_agent": REPO / "guest-agent" / "bulkhead_agent",
}
# Left out of the copy and of the agent hash: bytecode, and extension modules a host build left in
# the tree (the image's copy engine is built for the guest by the copy engine layer instead).
AGENT_IGNORED_SUFFIXES = (".pyc", ".pyo", ".so")
# The C copy engine (bulkhead_wire._copyengine): C sources and the cffi build script.
COPYENGINE_DIR = REPO / "cffi_build"
COPYENGINE_BUILDER = COPYENGINE_DIR / "build_copyengine.py"
FORMAT = 1  # bump when the layout of OUT or of the cache layers changes

# Inside the guest.
TRIPLET = "x86_64-linux-gnu"
PYTHON = "python3.11"
GUEST_PYTHONPATH = "usr/lib/bulkhead/python"  # relative to the guest root
ROOT_DEV = "/dev/vda"


def builder_files() -> list[Path]:
    """The builder's own source files (its code is an input of every layer), in a fixed order."""
    return [ENTRY_POINT, *sorted(PACKAGE.glob("*.py"))]


def copyengine_sources() -> list[Path]:
    """The copy engine's inputs (*.c, *.h, *.py in cffi_build/; not its notes), in a fixed order."""
    return sorted(
        p for p in COPYENGINE_DIR.glob("*") if p.suffix in (".c", ".h", ".py") and p.is_file()
    )


def read_list(path: Path) -> list[list[str]]:
    """Whitespace-split, non-comment lines of a config file."""
    rows = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append(line.split())
    return rows
