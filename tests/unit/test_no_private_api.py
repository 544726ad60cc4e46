"""No code of ours uses a dependency's private API (a name with a leading underscore): such names
change without notice (tomlkit 0.15 dropped Container._insert_after and broke the containerd
config merge for everyone who installed then). Our own private names are ours to use."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREES = ("shim", "guest-agent", "wire", "packaging", "bench", "cffi_build", "tests", "proto")
SCRIPTS = ("packaging/build-guest-image", "packaging/demo-image/build")
# Underscore names the standard library documents as public.
DOCUMENTED = {"_exit", "_asdict", "_replace", "_fields", "_make", "_missing_", "_value_",
              "_name_", "_generate_next_value_", "_thread"}


def _sources() -> Iterator[Path]:
    for tree in TREES:
        yield from (p for p in (REPO / tree).rglob("*.py") if not p.name.endswith("_pb2.py"))
    for script in SCRIPTS:
        yield REPO / script


def _parsed() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in _sources()]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(modules: list[tuple[Path, ast.Module]]) -> set[str]:
    """Every underscore name our code defines: functions, classes, attributes, module names."""
    names = {p.stem for p, _ in modules} | {"_copyengine"}  # (the cffi module cffi_build makes)
    for _, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
    return {n for n in names if _private(n)}


def _foreign(tree: ast.Module, own: set[str]) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr not in own and node.attr not in DOCUMENTED:
                yield node.lineno, f".{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = [*node.module.split("."), *(a.name for a in node.names)]
            bad = [p for p in parts if _private(p) and p not in own and p not in DOCUMENTED]
            if bad:
                yield node.lineno, f"from {node.module} import {', '.join(bad)}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bad = [p for p in alias.name.split(".") if _private(p) and p not in own]
                if bad:
                    yield node.lineno, f"import {alias.name}"


def test_no_private_name_of_a_dependency_is_used() -> None:
    modules = _parsed()
    own = _own_names(modules)
    found = [f"{path.relative_to(REPO)}:{line}: {what}"
             for path, tree in modules for line, what in _foreign(tree, own)]
    assert found == [], "private API of a dependency:\n" + "\n".join(found)


def test_the_check_sees_a_foreign_private_name() -> None:
    tree = ast.parse("import tomlkit\ndoc = tomlkit.document()\ndoc.value._insert_after(1, 2)\n")
    assert list(_foreign(tree, {"_ours"})) == [(3, "._insert_after")]
