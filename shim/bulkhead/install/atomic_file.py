"""Replacing a file on a host or node in one rename, so a crash leaves the old or the new one."""

from __future__ import annotations

import os
from pathlib import Path


def replace_file(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None
                 ) -> None:
    """Write data beside path, fsync, set mode (and owner), rename over path; OSError leaves
    no temporary file behind."""
    tmp = path.with_name(f".{path.name}.bulkhead-tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
