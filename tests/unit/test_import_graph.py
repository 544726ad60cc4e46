"""The import structure: no cycles among our modules (late imports inside functions count too),
no host package importing one above it in the layer table, and the guest's packages never
importing the host's (the guest image ships only bulkhead_wire and bulkhead_agent)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (("shim", "bulkhead"), ("guest-agent", "bulkhead_agent"), ("wire", "bulkhead_wire"),
            ("packaging", "guestimage"))


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages."""
    out: dict[str, Path] = {}
    for root, pkg in PACKAGES:
        for path in sorted((REPO / root / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO / root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that `name` imports anywhere in its code (a submodule, else its package)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


# bulkhead's packages, lowest first: a package imports only from its own row or the rows below
# (bulkhead_wire and the plain modules at the top of bulkhead, such as config and paths, are
# below them all). docs/architecture.md shows the same table.
LAYERS = (
    ("vmm", "network", "stdio", "agent"),
    ("template",),
    ("sandbox",),
    ("shim", "monitor", "debug"),
    ("doctor", "install", "demo", "cli"),
)


def layer_of(module: str, known: dict[str, Path]) -> tuple[str, int]:
    """(package, row) of a bulkhead module; row -1 for the plain modules below every package."""
    parts = module.split(".")
    package = parts[1] if len(parts) > 1 else ""
    is_package = len(parts) > 2 or known[module].name == "__init__.py"
    for row, names in enumerate(LAYERS):
        if package in names and (is_package or package == "cli"):
            return package, row
    if is_package:
        raise AssertionError(f"package bulkhead.{package} is missing from LAYERS")
    return package, -1


def upward_imports(known: dict[str, Path]) -> list[str]:
    """Every import of a bulkhead module from a package higher in LAYERS than the importer's."""
    out = []
    for name, path in known.items():
        if not name.startswith("bulkhead."):
            continue
        _, row = layer_of(name, known)
        for target in imports(name, path, known):
            if target.startswith("bulkhead.") and layer_of(target, known)[1] > row:
                out.append(f"{name} -> {target}")
    return sorted(out)


def package_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """bulkhead's packages and the others each imports (plain modules left out)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        if not name.startswith("bulkhead."):
            continue
        package, row = layer_of(name, known)
        if row < 0:
            continue
        edges = graph.setdefault(package, set())
        for target in imports(name, path, known):
            if target.startswith("bulkhead."):
                other, other_row = layer_of(target, known)
                if other_row >= 0 and other != package:
                    edges.add(other)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert "bulkhead.vmm.accel" in graph["bulkhead.vmm.qemu"]  # the walk sees our imports
    assert cycles(graph) == []


def test_no_package_imports_upward() -> None:
    known = modules()
    assert layer_of("bulkhead.sandbox.sandbox", known) == ("sandbox", 2)
    assert layer_of("bulkhead.config", known)[1] == -1
    assert upward_imports(known) == []


def test_no_package_cycles() -> None:
    graph = package_graph(modules())
    assert "agent" in graph["sandbox"]  # the graph sees packages
    assert cycles(graph) == []


def test_guest_packages_stand_alone() -> None:
    known = modules()
    guest = [n for n in known if n.split(".")[0] in ("bulkhead_agent", "bulkhead_wire")]
    leaks = {n: sorted(t for t in imports(n, known[n], known) if t.split(".")[0] == "bulkhead")
             for n in guest}
    assert {n: t for n, t in leaks.items() if t} == {}
    assert "bulkhead_wire.stdio.link" in imports("bulkhead_agent.procio",
                                                    known["bulkhead_agent.procio"], known)


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
