"""Guest image builder: the copy engine layer (bulkhead_wire._copyengine built for the guest), its
key, and how it joins the image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from guestimage import assemble, copyengine, inputs, layout
from guestimage.debian import Package, Resolution
from guestimage.layers import prune_layers
from guestimage.steps import BuildError
from guestimage.wheels import wheel_requirements

DEBIAN_311 = {"impl": "cpython", "version": "3.11", "include": "/usr/include/python3.11",
              "cffi": "2.1.1"}


def fake_engine_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "cffi_build"
    src.mkdir()
    for name in ("copyengine.c", "copyengine.h", "build_copyengine.py", "STATUS.md"):
        (src / name).write_text(f"{name} v1\n")
    monkeypatch.setattr(layout, "COPYENGINE_DIR", src)
    monkeypatch.setattr(inputs, "REPO", tmp_path)
    return src


def test_the_engine_sources_are_the_layer_inputs() -> None:
    names = [p.name for p in layout.copyengine_sources()]
    assert {"copyengine.c", "copyengine.h", "build_copyengine.py"} <= set(names)
    assert "STATUS.md" not in names
    assert layout.COPYENGINE_BUILDER in layout.copyengine_sources()


def test_copyengine_key_follows_code_not_notes(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    src = fake_engine_sources(tmp_path, monkeypatch)
    first = inputs.copyengine_key("script")
    (src / "STATUS.md").write_text("more notes\n")
    assert inputs.copyengine_key("script") == first
    assert inputs.copyengine_key("another builder") != first
    for name in ("copyengine.c", "copyengine.h", "build_copyengine.py"):
        (src / name).write_text(f"{name} v2\n")
        changed = inputs.copyengine_key("script")
        assert changed != first
        (src / name).write_text(f"{name} v1\n")
    assert inputs.copyengine_key("script") == first


def collect(cache: Path) -> inputs.Inputs:
    return inputs.collect_inputs(cache, "erofs", "none", "none")


def test_input_hash_covers_the_engine_and_ignores_stray_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = fake_engine_sources(tmp_path, monkeypatch)
    pkg = Package("python3.11-minimal", "3.11.2-6", "amd64", "aa", 1)
    kernel = Package("linux-image-amd64", "6.1", "amd64", "bb", 2)
    monkeypatch.setattr(inputs, "resolve_packages", lambda *a: Resolution([pkg], kernel))
    wire = tmp_path / "wire" / "bulkhead_wire"
    wire.mkdir(parents=True)
    (wire / "__init__.py").write_text("")
    monkeypatch.setattr(inputs, "AGENT_SOURCES", {"bulkhead_wire": wire})
    first = collect(tmp_path)
    # A module a host build left in the tree is not copied into the image, so it changes nothing.
    (wire / "_copyengine.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    assert collect(tmp_path).input_hash == first.input_hash
    (src / "copyengine.c").write_text("int changed;\n")
    second = collect(tmp_path)
    assert second.copyengine_key != first.copyengine_key
    assert second.input_hash != first.input_hash
    assert (second.base_key, second.kernel_key, second.wheels_key) == (
        first.base_key, first.kernel_key, first.wheels_key)


def test_the_guest_gets_the_cffi_backend_from_a_pinned_wheel() -> None:
    assert any(r.startswith("cffi==") for r in wheel_requirements())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"include": "/root/.pyenv/versions/3.11.7/include/python3.11"}, "not Debian's"),
        ({"version": "3.12"}, "the guest runs python3.11"),
        ({"impl": "pypy"}, "the guest runs python3.11"),
        ({"cffi": None}, "no cffi"),
    ],
)
def test_unusable_build_pythons(change: dict[str, Any], reason: str | None,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    include = tmp_path / "include" / "python3.11"
    include.mkdir(parents=True)
    (include / "Python.h").write_text("")
    monkeypatch.setattr(copyengine, "DEBIAN_INCLUDE", include)
    info = {**DEBIAN_311, "include": str(include), **change}
    got = copyengine.unusable(info)
    assert got is None if reason is None else reason in (got or "")


def test_a_build_python_needs_the_headers(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copyengine, "DEBIAN_INCLUDE", tmp_path)
    assert "python3-dev" in (copyengine.unusable({**DEBIAN_311, "include": str(tmp_path)}) or "")


def test_choose_build_python_takes_the_first_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copyengine, "HOST_PYTHONS", ("/a", "/b", "/a", "/c"))
    probes: dict[str, dict[str, Any] | str] = {
        "/a": "No such file or directory",
        "/b": {**DEBIAN_311, "cffi": None},
        "/c": DEBIAN_311,
    }
    seen: list[str] = []

    def probe(exe: str) -> dict[str, Any] | str:
        seen.append(exe)
        return probes[exe]

    monkeypatch.setattr(copyengine, "probe", probe)
    monkeypatch.setattr(copyengine, "unusable", lambda info: None if info["cffi"] else "no cffi")
    assert copyengine.choose_build_python() == ("/c", "2.1.1")
    assert seen == ["/a", "/b", "/c"]
    del probes["/c"]
    monkeypatch.setattr(copyengine, "HOST_PYTHONS", ("/a", "/b"))
    with pytest.raises(BuildError, match=r"/a: No such file.*/b: no cffi"):
        copyengine.choose_build_python()


def fake_layer(tmp_path: Path) -> Path:
    layer = tmp_path / "cache" / "copyengine-0123"
    so = layer / "tree" / copyengine.SO_PATH
    so.parent.mkdir(parents=True)
    so.write_bytes(b"\x7fELF module")
    (layer / "copyengine.json").write_text(json.dumps({"module": copyengine.MODULE}))
    return layer


def test_install_copyengine_puts_the_module_in_the_guest_package(tmp_path: Path) -> None:
    layer = fake_layer(tmp_path)
    pydir = tmp_path / "stage" / layout.GUEST_PYTHONPATH
    with pytest.raises(BuildError, match="no bulkhead_wire package"):
        copyengine.install_copyengine(layer, pydir)
    (pydir / "bulkhead_wire").mkdir(parents=True)
    info = copyengine.install_copyengine(layer, pydir)
    assert info == {"module": "bulkhead_wire._copyengine"}
    assert (pydir / "bulkhead_wire/_copyengine.abi3.so").read_bytes() == b"\x7fELF module"


def test_agent_sources_are_copied_without_host_modules(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "wire" / "bulkhead_wire"
    (src / "__pycache__").mkdir(parents=True)
    for name in ("__init__.py", "_copyengine.abi3.so", "__pycache__/x.cpython-311.pyc"):
        (src / name).write_text("")
    monkeypatch.setattr(assemble, "AGENT_SOURCES", {"bulkhead_wire": src})
    assemble.copy_agent_sources(tmp_path / "py")
    assert sorted(p.name for p in (tmp_path / "py").rglob("*")) == ["__init__.py", "bulkhead_wire"]


def test_prune_keeps_the_used_engine_layer_only(tmp_path: Path) -> None:
    used, old = tmp_path / "copyengine-new", tmp_path / "copyengine-old"
    other = tmp_path / "wheelhouse"
    for d in (used, old, other):
        d.mkdir()
    prune_layers(tmp_path, {used})
    assert used.is_dir() and other.is_dir() and not old.exists()


def test_the_engine_layer_builds_for_the_guest(tmp_path: Path) -> None:
    """A real compile, where this host can (gcc, a Debian python3.11 with cffi, headers)."""
    try:
        copyengine.choose_build_python()
    except BuildError as e:
        pytest.skip(str(e))
    layer = tmp_path / "copyengine-key"
    copyengine.build_copyengine_layer(layer, tmp_path)
    so = layer / "tree" / copyengine.SO_PATH
    assert so.read_bytes()[:4] == b"\x7fELF"
    info = json.loads((layer / "copyengine.json").read_text())
    assert info["file"] == "/usr/lib/bulkhead/python/bulkhead_wire/_copyengine.abi3.so"
    assert info["module"] == "bulkhead_wire._copyengine" and info["cffi"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copyengine-key"]  # no leftovers
