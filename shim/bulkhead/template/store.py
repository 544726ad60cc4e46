"""Templates on tmpfs: /run/bulkhead/templates/<digest>/{memory, state, manifest.json}.

A template is built in a `.build-<digest>-<pid>` directory and renamed into place whole, so
a reader sees a complete template or none. A per-digest flock makes concurrent shims build
one template, not one each; a build whose process died is removed by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bulkhead import paths
from bulkhead.template.key import TemplateError, TemplateKey

log = logging.getLogger(__name__)

MEMORY = "memory"
STATE = "state"
MANIFEST = "manifest.json"
BUILD_PREFIX = ".build-"
LOCK_SUFFIX = ".lock"
LOCK_POLL = 0.05  # seconds between tries while another process builds the template


def templates_dir() -> Path:
    """Where templates live (tmpfs: they vanish at reboot and are rebuilt on first need)."""
    return Path(paths.RUN_DIR) / "templates"


@dataclass
class Template:
    """One complete template on disk."""

    digest: str
    dir: Path
    manifest: dict[str, Any]

    @property
    def memory(self) -> Path:
        return self.dir / MEMORY

    @property
    def state(self) -> Path:
        return self.dir / STATE

    def problem(self, key: TemplateKey | None = None) -> str:
        """Why this template cannot be used ("" if it can): missing or damaged files."""
        if key is not None and self.manifest.get("key") != _key_dict(key):
            return "its manifest does not match its name"
        want = int(self.manifest.get("key", {}).get("memory_mib", 0)) << 20
        for path, size in ((self.memory, want), (self.state, 0)):
            try:
                st = path.stat()
            except OSError:
                return f"{path.name} is missing"
            if (size and st.st_size != size) or st.st_size == 0:
                return f"{path.name} has {st.st_size} bytes" + (f", not {size}" if size else "")
        return ""

    def disk_usage(self) -> int:
        """Bytes the template takes on tmpfs (its memory file is sparse)."""
        return sum(p.stat().st_blocks * 512 for p in self.dir.iterdir() if p.is_file())


def _key_dict(key: TemplateKey) -> dict[str, Any]:
    return asdict(key)


def load(digest: str) -> Template | None:
    """The template of that digest, or None if there is none (or its manifest is unreadable)."""
    tdir = templates_dir() / digest
    try:
        manifest = json.loads((tdir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return Template(digest, tdir, manifest) if isinstance(manifest, dict) else None


def all_templates() -> list[Template]:
    """Every complete template, oldest first."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(templates_dir())):
            if not entry.startswith(".") and not entry.endswith(LOCK_SUFFIX):
                template = load(entry)
                if template is not None:
                    found.append(template)
    return sorted(found, key=lambda t: t.manifest.get("created", 0))


def remove(digest: str, why: str = "") -> bool:
    """Delete a template (clones running from it keep their mapping); True if it existed."""
    tdir = templates_dir() / digest
    if not tdir.exists():
        return False
    if why:
        log.warning("template %s removed: %s", digest, why)
    shutil.rmtree(tdir, ignore_errors=True)  # (a build's lock file goes with its build)
    return True


def new_build_dir(digest: str) -> Path:
    """A private directory to build in; leftovers of dead builders are removed first."""
    base = templates_dir()
    base.mkdir(parents=True, exist_ok=True)
    remove_dead_builds()
    bdir = base / f"{BUILD_PREFIX}{digest}-{os.getpid()}"
    shutil.rmtree(bdir, ignore_errors=True)
    bdir.mkdir(mode=0o700)
    return bdir


def remove_dead_builds() -> list[Path]:
    """Build directories whose builder process is gone (it was killed mid-build)."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(templates_dir()):
            if not entry.startswith(BUILD_PREFIX):
                continue
            pid = entry.rsplit("-", 1)[-1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(templates_dir() / entry, ignore_errors=True)
                removed.append(templates_dir() / entry)
    return removed


def commit(build_dir: Path, key: TemplateKey, facts: dict[str, Any]) -> Template:
    """Write the manifest and rename the build into place (atomic for readers)."""
    manifest = {"key": _key_dict(key), "created": time.time(), **facts}
    (build_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    target = templates_dir() / key.digest
    shutil.rmtree(target, ignore_errors=True)
    os.rename(build_dir, target)
    return Template(key.digest, target, manifest)


@contextlib.asynccontextmanager
async def locked(digest: str, timeout: float) -> AsyncIterator[None]:
    """Hold the template's build lock; waits (without blocking the loop) while others hold it.

    The lock file exists only while a build holds it (nothing is left in the templates dir): the
    holder unlinks it before releasing, and a waiter that then wins the unlinked file retries.
    """
    base = templates_dir()
    base.mkdir(parents=True, exist_ok=True)
    path = base / (digest + LOCK_SUFFIX)
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            await _flock(fd, digest, deadline, timeout)
            if _is_file_at(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder before us removed it: lock the file there now
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)  # releases the lock


async def _flock(fd: int, digest: str, deadline: float, timeout: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TemplateError(f"template {digest}: another process has been "
                                    f"building it for over {timeout:g} s") from None
            await asyncio.sleep(LOCK_POLL)


def _is_file_at(fd: int, path: Path) -> bool:
    """True while fd is still the file at path (not one its last holder unlinked)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
