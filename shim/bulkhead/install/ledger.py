"""What `bulkhead node install` did to a node's filesystem, recorded as it happens, so that
`bulkhead node uninstall` removes exactly what was added and puts back what was changed.

Paths are node paths ("/etc/containerd/config.toml") under a host root ("/host"); symlinks in
the node's tree resolve inside the host root, as they would on the node itself."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bulkhead.install.atomic_file import replace_file

STATE_DIR = "/var/lib/bulkhead"
MANIFEST = f"{STATE_DIR}/node-install.json"
BACKUP_DIR = f"{STATE_DIR}/node-backup"
FORMAT = 1


class InstallError(RuntimeError):
    """A node path that cannot be installed or restored; the text names it."""


@dataclass(frozen=True)
class HostRoot:
    """The node's root filesystem as seen from here (the DaemonSet's /host)."""

    root: Path

    def at(self, node_path: str) -> Path:
        """Where a node path is here; symlinks in its parents resolve inside the root."""
        parts = [p for p in node_path.split("/") if p]
        here = self.root
        for depth, part in enumerate(parts[:-1]):
            here = self._follow(here / part, depth)
        return here / parts[-1] if parts else here

    def resolve(self, node_path: str) -> Path:
        """Where a node path is here, following a symlink at its end too."""
        return self._follow(self.at(node_path), 0)

    def _follow(self, path: Path, depth: int, hops: int = 0) -> Path:
        if hops > 40:
            raise InstallError(f"too many symlinks at {path}")
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        if target.startswith("/"):
            return self._follow(self.at(target + "/x").parent, depth, hops + 1)
        return self._follow(Path(os.path.normpath(path.parent / target)), depth, hops + 1)


@dataclass
class Entry:
    """One node path install created or changed (a changed one has a backup of the original)."""

    path: str
    kind: str  # dir | file | symlink | tree
    action: str  # created | changed
    backup: str = ""  # node path of the original (changed files)
    owner: tuple[int, int] = (0, 0)  # the original's uid/gid and mode (changed files)
    mode: int = 0
    digest: str = ""  # what install wrote: content hash (file), source digest (tree)


@dataclass
class Ledger:
    """The manifest of one node's install, saved after every step."""

    host: HostRoot
    entries: list[Entry] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)  # containerd version, label, ...

    # --- the manifest file --------------------------------------------------------------------

    @classmethod
    def begin(cls, host: HostRoot) -> Ledger:
        """The node's ledger: the one an earlier install left, or a new one whose first
        entries are the state directory and whichever of its parents install created."""
        found = cls.load(host)
        if found is not None:
            return found
        created: list[str] = []
        parts = [p for p in STATE_DIR.split("/") if p]
        for depth in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:depth])
            here = host.at(sub)
            if not here.is_dir():
                here.mkdir(0o755)
                created.append(sub)
        ledger = cls(host, [Entry(p, "dir", "created") for p in created])
        ledger.save()
        return ledger

    @classmethod
    def load(cls, host: HostRoot) -> Ledger | None:
        path = host.at(MANIFEST)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InstallError(f"unreadable install manifest {path}: {exc}") from None
        if raw.get("format") != FORMAT:
            raise InstallError(f"{path} has format {raw.get('format')!r}, not {FORMAT}")
        entries = [Entry(**{**e, "owner": tuple(e.get("owner", (0, 0)))})
                   for e in raw["entries"]]
        return cls(host, entries, raw.get("facts", {}))

    def save(self) -> None:
        entries = ",\n  ".join(json.dumps(asdict(e)) for e in self.entries)
        text = (f'{{"format": {FORMAT},\n "facts": {json.dumps(self.facts)},\n'
                f' "entries": [\n  {entries}\n ]}}\n')
        path = self.host.at(MANIFEST)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def find(self, node_path: str) -> Entry | None:
        return next((e for e in self.entries if e.path == node_path), None)

    def _record(self, entry: Entry) -> None:
        if self.find(entry.path) is None:
            self.entries.append(entry)
        self.save()

    # --- installing ---------------------------------------------------------------------------

    def ensure_dir(self, node_path: str, mode: int = 0o755) -> None:
        """Create a directory and its missing parents, recording each one created."""
        parts = [p for p in node_path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:depth])
            here = self.host.at(sub)
            if here.is_dir():
                continue
            if here.exists() or here.is_symlink():
                raise InstallError(f"{here} is in the way of directory {sub}")
            here.mkdir(mode)
            os.chmod(here, mode)
            self._record(Entry(sub, "dir", "created"))

    def put_file(self, node_path: str, data: bytes, mode: int = 0o644) -> bool:
        """Write a file (atomically); an existing one not ours is backed up first. True if the
        node's file changed."""
        here = self.host.at(node_path)
        digest = hashlib.sha256(data).hexdigest()
        if here.is_file() and not here.is_symlink() and _file_digest(here) == digest:
            return False
        if here.is_file() and not here.is_symlink():
            mode = stat.S_IMODE(here.stat().st_mode)  # a changed file keeps its mode
        self._prepare(node_path, here, "file", digest)
        replace_file(here, data, mode)
        return True

    def put_symlink(self, node_path: str, target: str) -> bool:
        here = self.host.at(node_path)
        if here.is_symlink() and os.readlink(here) == target:
            return False
        self._prepare(node_path, here, "symlink", target)
        tmp = here.with_name(f".{here.name}.bulkhead-tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, here)
        return True

    def put_tree(self, node_path: str, source: Path) -> bool:
        """Copy a directory tree; skipped when the source is what the last install copied."""
        here = self.host.at(node_path)
        if here.exists() and here.resolve() == source.resolve():
            return False  # installing onto the machine it runs from: already in place
        digest = tree_digest(source)
        mine = self.find(node_path)
        if mine is not None and mine.digest == digest and here.is_dir():
            return False
        if mine is None and (here.exists() or here.is_symlink()):
            raise InstallError(f"{here} exists and was not installed by `bulkhead node install`: "
                               "move it away first")
        self.ensure_dir(str(Path(node_path).parent))
        staging = here.with_name(f".{here.name}.bulkhead-new")
        old = here.with_name(f".{here.name}.bulkhead-old")
        for leftover in (staging, old):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(source, staging, symlinks=True)
        if here.is_dir():
            os.rename(here, old)
        os.rename(staging, here)
        shutil.rmtree(old, ignore_errors=True)
        if mine is None:
            self._record(Entry(node_path, "tree", "created", digest=digest))
        else:
            mine.digest = digest
            self.save()
        return True

    def _prepare(self, node_path: str, here: Path, kind: str, digest: str) -> None:
        """Before replacing a node path: parents made, the original backed up, the entry kept."""
        mine = self.find(node_path)
        if mine is not None:
            mine.digest = digest
            self.save()
            return
        self.ensure_dir(str(Path(node_path).parent))
        if not (here.exists() or here.is_symlink()):
            self._record(Entry(node_path, kind, "created", digest=digest))
            return
        if here.is_dir() and not here.is_symlink():
            raise InstallError(f"{here} is a directory, expected a {kind}")
        backup = BACKUP_DIR + node_path
        self.ensure_dir(str(Path(backup).parent), 0o700)
        st = here.lstat()
        shutil.copy2(here, self.host.at(backup), follow_symlinks=False)
        self._record(Entry(node_path, kind, "changed", backup=backup,
                           owner=(st.st_uid, st.st_gid), mode=stat.S_IMODE(st.st_mode),
                           digest=digest))

    # --- uninstalling -------------------------------------------------------------------------

    def undo(self) -> list[str]:
        """Undo every entry, newest first; returns what could not be undone (with why). The
        manifest and the state directory go last, and only when everything else went."""
        state = [e for e in self.entries if (STATE_DIR + "/").startswith(e.path + "/")]
        problems: list[str] = []
        for entry in reversed([e for e in self.entries if e not in state]):
            problem = self._undo_one(entry)
            if problem:
                problems.append(problem)
                continue
            self.entries.remove(entry)
            self.save()
        if problems:
            return problems
        self.host.at(MANIFEST).unlink()
        for entry in reversed(state):
            problem = self._undo_one(entry)
            if problem:
                problems.append(problem)
        return problems

    def _undo_one(self, entry: Entry) -> str | None:
        here = self.host.at(entry.path)
        try:
            if entry.action == "changed":
                backup = self.host.at(entry.backup)
                if not (backup.exists() or backup.is_symlink()):
                    return f"cannot restore {entry.path}: its backup {entry.backup} is gone"
                _restore(backup, here, entry)
            elif entry.kind == "tree":
                shutil.rmtree(here)
            elif entry.kind == "dir":
                if here.is_dir() and any(here.iterdir()):
                    return f"kept {entry.path}: it holds files install did not put there"
                here.rmdir()
            else:
                here.unlink()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{entry.path}: {exc}"
        return None


def _restore(backup: Path, here: Path, entry: Entry) -> None:
    """Put the original back (a rename when on the same filesystem) with its owner and mode."""
    try:
        os.replace(backup, here)
    except OSError:
        shutil.copy2(backup, here, follow_symlinks=False)
        backup.unlink()
    if not here.is_symlink():
        os.chown(here, *entry.owner)
        os.chmod(here, entry.mode)


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_digest(root: Path) -> str:
    """A digest of a tree's names, kinds, modes, sizes, mtimes and link targets (what a copy
    with copystat keeps), cheap enough for a venv of hundreds of MiB."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(
                os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                h.update(f"L {rel} {os.readlink(path)}\n".encode())
            else:
                h.update(f"F {rel} {st.st_mode:o} {st.st_size} {st.st_mtime_ns}\n".encode())
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                h.update(f"D {os.path.relpath(path, root)} {os.lstat(path).st_mode:o}\n".encode())
    return h.hexdigest()
