"""Changing a host's config file safely: the planned change with its diff, and an atomic write
that keeps a timestamped backup of what it replaced (so it can be reviewed and restored)."""

from __future__ import annotations

import datetime
import difflib
import shutil
from dataclasses import dataclass
from pathlib import Path

from bulkhead.install import containerd_config as cc
from bulkhead.install.atomic_file import replace_file


@dataclass(frozen=True)
class ConfigChange:
    """A config file as it is (None: absent) and as the merge would leave it."""

    path: Path
    old_text: str | None
    new_text: str

    @property
    def changed(self) -> bool:
        return self.old_text != self.new_text

    def diff(self) -> str:
        """Unified diff of the change ("" when nothing changes)."""
        old = (self.old_text or "").splitlines(keepends=True)
        label = str(self.path)
        return "".join(difflib.unified_diff(
            old, self.new_text.splitlines(keepends=True),
            fromfile=label if self.old_text is not None else "/dev/null", tofile=label))


def read_optional(path: Path) -> str | None:
    """The file's text, or None if it does not exist (a directory or unreadable file raises)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise cc.ContainerdConfigError(f"cannot read {path}: {exc}") from None


def plan_merge(path: Path, containerd_version: str, runtime_name: str = cc.RUNTIME_NAME,
               restrict_oom_score_adj: bool | None = None, source: str | None = None
               ) -> ConfigChange:
    """What merging the handler into the file at path would write (nothing is written)."""
    old = read_optional(path)
    new = cc.merge_handler(old or "", containerd_version, runtime_name, restrict_oom_score_adj,
                           source=source or str(path))
    return ConfigChange(path, old, new)


def backup_path(path: Path, now: datetime.datetime | None = None) -> Path:
    """`<file>.bak.<UTC timestamp>`, with a counter if that name is taken."""
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.bak.{stamp}")
    n = 1
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.name}.bak.{stamp}.{n}")
        n += 1
    return candidate


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace path by text in one rename; an existing file's mode and owner are kept."""
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        owner = None
    try:
        replace_file(path, text.encode(), mode, owner)
    except OSError as exc:
        raise cc.ContainerdConfigError(f"cannot write {path}: {exc}") from None


def apply(change: ConfigChange) -> Path | None:
    """Write a change (no-op if none): back the old file up first; returns the backup's path."""
    if not change.changed:
        return None
    backup = None
    if change.old_text is not None:
        backup = backup_path(change.path)
        try:
            shutil.copy2(change.path, backup)
        except OSError as exc:
            raise cc.ContainerdConfigError(f"cannot back {change.path} up to {backup}: {exc}"
                                           ) from None
    write_atomic(change.path, change.new_text)
    return backup
