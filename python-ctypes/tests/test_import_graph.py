"""The package's modules import each other without cycles.

The graph is computed from the source: every ``import``/``from ... import``
statement anywhere in a module (top level, inside functions, under
``if TYPE_CHECKING:``) that names a module of the package is an edge. The
implicit import of a parent package that every submodule import performs
is not an edge (it would make every module depend on ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

from conftest import PACKAGE_ROOT

PACKAGE = "sage_queue"


def import_graph(package_dir: Path, package: str = PACKAGE) -> Dict[str, Set[str]]:
    """Module -> the package modules it imports (names without the package)."""
    modules = {p.stem for p in package_dir.glob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for module in sorted(modules):
        tree = ast.parse((package_dir / f"{module}.py").read_text(), filename=f"{module}.py")
        edges: Set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == package and len(parts) > 1 and parts[1] in modules:
                        edges.add(parts[1])
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    parts = (node.module or "").split(".")
                    if parts[0] != package:
                        continue
                    target = parts[1] if len(parts) > 1 else None
                else:
                    target = node.module.split(".")[0] if node.module else None
                if target is not None:
                    edges.add(target if target in modules else "__init__")
                else:  # `from . import a, b`: each name that is a module
                    edges.update(alias.name if alias.name in modules else "__init__" for alias in node.names)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of ``graph`` (its modules in import order, the first repeated
    at the end), or None."""
    state: Dict[str, int] = {}  # 1 on the current path, 2 done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_ROOT / PACKAGE)
    assert len(graph) >= 15 and graph["transport_shm"] >= {"descriptor", "queue"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_model_imports_no_transport() -> None:
    """descriptor.py (the descriptor model and the registry) imports no
    transport; the transports import it. Ray is imported by the two Ray
    modules only (the Ray queue types, and the Ray half of ``auto``)."""
    graph = import_graph(PACKAGE_ROOT / PACKAGE)
    assert graph["descriptor"] <= {"errors"}, graph["descriptor"]
    for transport in ("transport_local", "transport_shm", "transport_rpc", "transport_auto", "ray_support",
                      "ray_bridge"):
        assert "descriptor" in graph[transport], transport
    importers_of_ray = set()
    for path in (PACKAGE_ROOT / PACKAGE).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers_of_ray.add(path.stem)
    assert importers_of_ray == {"ray_support", "ray_bridge"}


def test_a_cycle_is_found(tmp_path: Path) -> None:
    """The detector itself: a cycle through an import inside a function and
    one through ``from . import`` are both reported."""
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import sage_queue.a\n")
    (pkg / "d.py").write_text("from . import a\n")
    graph = import_graph(pkg)
    assert graph["b"] == {"c"} and graph["c"] == {"a"} and graph["d"] == {"a"}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None
