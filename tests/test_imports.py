"""The import graph of `llmcourse`: no cycle, and no module reaching into another module's private names.

The graph is read with `ast` from every module, imports inside functions included (a cycle through a function-level
import is still a cycle: it only moves the failure to the first call).
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmcourse

PACKAGE = Path(llmcourse.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module of a `from ... import` (relative ones resolved against `module`)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """({module: modules of the package it imports}, ["module imports _private from other"])."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private: list[str] = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node)
                targets = []
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append((sub, None) if sub in modules else (source, alias.name))
            else:
                continue
            for target, imported in targets:
                while target and target not in modules:  # `import llmcourse.x.y` also runs llmcourse.x
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                if not name.startswith(target + ".") and not target.startswith(name + "."):
                    graph[name].add(target)  # a package and its own submodules may import each other
                if imported and imported.startswith("_") and not imported.startswith("__"):
                    private.append(f"{name} imports {imported} from {target}")
    return graph, private


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    graph, _ = import_graph()
    assert len(graph) > 20, sorted(graph)  # the walk found the package, teaching/ included
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_private_names_across_modules():
    _, private = import_graph()
    assert private == []


def test_learner_modules_do_not_import_teaching():
    graph, _ = import_graph()
    for module, targets in graph.items():
        if not module.startswith("llmcourse.teaching") and module != "llmcourse.cli":
            assert not any(t.startswith("llmcourse.teaching") for t in targets), (module, targets)


def test_the_checker_sees_a_cycle_and_a_private_import(tmp_path):
    """The two checks above can fail: a package with a function-level cycle and a private import."""
    pkg = tmp_path / "llmcourse"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Fake."""\n')
    (pkg / "a.py").write_text("from .b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from .sub.c import _secret\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def _secret():\n    from ..a import helper\n")
    graph, private = import_graph(pkg)
    assert find_cycle(graph) == ["llmcourse.a", "llmcourse.b", "llmcourse.sub.c", "llmcourse.a"]
    assert private == ["llmcourse.b imports _secret from llmcourse.sub.c"]
