"""No import cycles among our modules (also late imports inside functions count), and the guest's
packages never import the host's: the guest image ships only bulkhead_wire and bulkhead_agent."""

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
