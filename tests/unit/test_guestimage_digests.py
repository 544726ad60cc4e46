"""Guest image builder: the hashes its cache keys and input hash are made of."""

from __future__ import annotations

from pathlib import Path

import pytest
from guestimage import digests, layout
from guestimage.assemble import uuid_from_hash
from guestimage.digests import builder_digest, hash_strings, tree_digest


def test_hash_strings_is_unambiguous() -> None:
    assert hash_strings(["ab", "c"]) != hash_strings(["a", "bc"])
    assert hash_strings([]) != hash_strings([""])
    assert hash_strings(iter(["x"])) == hash_strings(["x"])


def test_tree_digest_ignores_bytecode_and_sees_modes_and_links(tmp_path: Path) -> None:
    (tmp_path / "pkg/__pycache__").mkdir(parents=True)
    (tmp_path / "pkg/mod.py").write_text("x = 1\n")
    (tmp_path / "pkg/link").symlink_to("mod.py")
    before = tree_digest(tmp_path)
    assert [line.split()[0] for line in before] == ["pkg/link", "pkg/mod.py"]
    assert before[0] == "pkg/link -> mod.py"
    (tmp_path / "pkg/__pycache__/mod.cpython-311.pyc").write_bytes(b"pyc")
    (tmp_path / "pkg/stale.pyc").write_bytes(b"pyc")
    assert tree_digest(tmp_path) == before
    (tmp_path / "pkg/mod.py").chmod(0o755)
    assert tree_digest(tmp_path) != before
    assert tree_digest(tmp_path / "absent", "x/") == ["x/<missing>"]


def test_builder_digest_covers_the_entry_point_and_every_module() -> None:
    files = layout.builder_files()
    assert files[0] == layout.ENTRY_POINT and files[0].name == "build-guest-image"
    names = {p.name for p in files[1:]}
    assert {"__init__.py", "cli.py", "debian.py", "digests.py", "layout.py"} <= names
    assert builder_digest() == builder_digest()


def test_builder_digest_changes_with_any_builder_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    entry, module = tmp_path / "build-guest-image", tmp_path / "guestimage" / "cli.py"
    module.parent.mkdir()
    entry.write_text("main()\n")
    module.write_text("def main(): ...\n")
    monkeypatch.setattr(digests, "PACKAGING", tmp_path)
    monkeypatch.setattr(digests, "builder_files", lambda: [entry, module])
    first = builder_digest()
    module.write_text("def main(): return 1\n")
    assert builder_digest() != first
    module.write_text("def main(): ...\n")
    assert builder_digest() == first


def test_uuid_from_hash() -> None:
    digest = "1ba3014aed41476111755b9511c51dd4d0cf23cc21e3f2e98f77fd3aca241769"
    assert uuid_from_hash(digest) == "1ba3014a-ed41-4761-8175-5b9511c51dd4"
