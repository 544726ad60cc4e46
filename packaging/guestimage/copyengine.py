"""The copy engine layer: bulkhead_wire._copyengine (cffi_build/) compiled for the guest, and the
check that the guest's own python loads it.

The guest has neither compiler nor headers, so the module is compiled on the host by
cffi_build/build_copyengine.py, run by a Debian python3.11: the guest runs the same interpreter
of the same release, so headers and ABI match (cffi's module uses the limited API, hence the
.abi3.so name setuptools gives it). Its runtime, _cffi_backend, is the cffi wheel
that packaging/guest/wheels.txt names, at the version of the project lock (the wheels layer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from guestimage.bytecode import guest_python
from guestimage.digests import sha256_file
from guestimage.files import link_or_copy, rmtree
from guestimage.layout import COPYENGINE_BUILDER, GUEST_PYTHONPATH, PYTHON
from guestimage.steps import BuildError, log, run

MODULE = "bulkhead_wire._copyengine"
SO_PATH = "bulkhead_wire/_copyengine.abi3.so"  # in the layer's tree/ and the guest's python path
DEBIAN_INCLUDE = Path("/usr/include") / PYTHON  # python3.11-dev: the guest interpreter's headers
# Tried in order: the python running the builder (the Makefile runs it from its venv), that venv
# (a Debian-python venv with cffi, for runs under another python), Debian's own.
HOST_PYTHONS = (sys.executable, "/opt/bulkhead/venv/bin/python", f"/usr/bin/{PYTHON}")
PROBE = """import json, sys, sysconfig
try:
    import cffi
    version = cffi.__version__
except ImportError:
    version = None
print(json.dumps({"impl": sys.implementation.name, "version": "%d.%d" % sys.version_info[:2],
                  "include": sysconfig.get_paths()["include"], "cffi": version}))
"""
# Run by the staged guest python (-S, argv[1] = the staged python path): the module, its cffi
# runtime and the wrapper the agent uses must all load from the image alone (sys.path[0], the
# script's directory, is outside the image and holds nothing else).
CHECK = """import sys
sys.path.insert(0, sys.argv[1])
import _cffi_backend
import bulkhead_wire._copyengine as ce
from bulkhead_wire.stdio import cengine
if not cengine.available():
    sys.exit("bulkhead_wire.stdio.cengine.available() is False")
print(_cffi_backend.__version__, ce.lib.CE_HEADER_SIZE)
"""


def unusable(info: dict[str, Any]) -> str | None:
    """Why a probed host python cannot build the guest's module, or None if it can."""
    if info["impl"] != "cpython" or f"python{info['version']}" != PYTHON:
        return f"{info['impl']} {info['version']}, the guest runs {PYTHON}"
    if Path(info["include"]) != DEBIAN_INCLUDE:
        return f"its headers are {info['include']}, not Debian's {DEBIAN_INCLUDE}"
    if not (DEBIAN_INCLUDE / "Python.h").exists():
        return f"no {DEBIAN_INCLUDE}/Python.h (install python3-dev)"
    if not info["cffi"]:
        return "no cffi"
    return None


def probe(exe: str) -> dict[str, Any] | str:
    """A host python's implementation, version, include dir and cffi version (or why not)."""
    try:
        proc = subprocess.run([exe, "-c", PROBE], capture_output=True, text=True)
    except OSError as e:
        return e.strerror or str(e)
    if proc.returncode != 0:
        return f"exited with status {proc.returncode}"
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


def choose_build_python() -> tuple[str, str]:
    """The first host python that can build the module: (path, its cffi version)."""
    tried = []
    for exe in dict.fromkeys(HOST_PYTHONS):
        info = probe(exe)
        reason = info if isinstance(info, str) else unusable(info)
        if reason is None and isinstance(info, dict):
            return exe, str(info["cffi"])
        tried.append(f"{exe}: {reason}")
    raise BuildError(
        f"copy engine layer: no host python can build {MODULE} for the guest "
        f"({'; '.join(tried)}): it needs a Debian {PYTHON} with cffi and python3-dev "
        "(make venv makes one), or run the builder with such a python"
    )


def build_copyengine_layer(layer: Path, tmp_root: Path) -> None:
    """Compile the module with cffi_build/build_copyengine.py --outdir (no sanitizer), keep the
    stripped .so and what built it."""
    if not COPYENGINE_BUILDER.is_file():
        raise BuildError(f"copy engine layer: {COPYENGINE_BUILDER} does not exist")
    exe, cffi_version = choose_build_python()
    log(f"copy engine layer: compiling {MODULE} with {exe} (cffi {cffi_version})")
    work = Path(tempfile.mkdtemp(prefix="copyengine-", dir=tmp_root))
    try:
        out = work / "build"
        env = {k: v for k, v in os.environ.items() if k != "BULKHEAD_CE_SANITIZE"}
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into cffi_build/
        argv = [exe, str(COPYENGINE_BUILDER), "--outdir", str(out)]
        run("copy engine build", argv, cwd=work, env=env)
        built = sorted((out / "bulkhead_wire").glob("_copyengine*.so"))
        if len(built) != 1:
            raise BuildError(f"copy engine build: expected one _copyengine*.so, found {built}")
        so = work / "tree" / SO_PATH
        so.parent.mkdir(parents=True)
        os.rename(built[0], so)
        run("copy engine strip", ["strip", "--strip-debug", str(so)])
        os.chmod(so, 0o644)
        rmtree(out)
        info = {
            "module": MODULE,
            "file": f"/{GUEST_PYTHONPATH}/{SO_PATH}",
            "sha256": sha256_file(so),
            "built_with": exe,
            "cffi": cffi_version,
        }
        (work / "copyengine.json").write_text(json.dumps(info, indent=1))
        rmtree(layer)
        work.rename(layer)
    finally:
        rmtree(work)


def install_copyengine(layer: Path, pydir: Path) -> dict[str, str]:
    """Hard-link the module next to the bulkhead_wire sources in the staged python path."""
    if not (pydir / SO_PATH).parent.is_dir():
        raise BuildError(f"agent layer: {pydir / SO_PATH} has no bulkhead_wire package to join")
    link_or_copy(layer / "tree" / SO_PATH, pydir / SO_PATH)
    info: dict[str, str] = json.loads((layer / "copyengine.json").read_text())
    return info


def check_copyengine(stage: Path) -> str:
    """The staged guest python must import the module and cengine must see it, so a missing
    _cffi_backend, library or symbol fails the build instead of the agent's fallback hiding it.
    Returns the _cffi_backend version."""
    pydir = stage / GUEST_PYTHONPATH
    script = stage.parent / "copyengine-check.py"  # a file, so an error shows its path, not it
    script.write_text(CHECK)
    try:
        out = guest_python(stage, [str(script), str(pydir)], f"import {MODULE}")
    except BuildError as e:
        raise BuildError(
            f"copy engine: the guest's {PYTHON} cannot load {MODULE} "
            f"(/{GUEST_PYTHONPATH}/{SO_PATH}): {e}"
        ) from e
    finally:
        script.unlink()
    return out.split()[0]
