"""The import graph of ``src/elman`` has no cycle, and no module imports another elman module
inside a function (the usual way to hide a cycle). Optional third-party packages (torch, onnx,
matplotlib, ...) may still be imported where they are needed."""
import ast
import os

import elman

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(elman.__file__)))   # .../src


def _modules() -> dict:
    found = {}
    for directory, _, files in os.walk(os.path.join(ROOT, "elman")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(module: str, path: str, modules: dict):
    """(elman modules imported, at module level or not) for every import statement."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                     for a in node.names]
        else:
            continue
        targets = set()
        for name in names:
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules:
                targets.add(name)
        if targets:
            yield node, targets


def _graph():
    modules = _modules()
    edges, nested = {m: set() for m in modules}, []
    for module, path in modules.items():
        for node, targets in _imports(module, path, modules):
            edges[module] |= targets
            if node.col_offset > 0:
                nested.append(f"{module}:{node.lineno} imports {sorted(targets)}")
    return edges, nested


def _cycles(edges: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    edges, _ = _graph()
    assert len(edges) > 40 and "elman.timeloop" in edges["elman.recurrent"]
    assert _cycles(edges) == []


def test_no_elman_import_hides_inside_a_function():
    _, nested = _graph()
    assert nested == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
