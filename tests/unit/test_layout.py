"""The layout rules of the product code, checked on its source with ``ast`` (nothing imported).

- No import circle among node/, workers/ and models/: an import inside a function counts
  (a lazy import that breaks a circle at run time still ties the two modules together);
  an import under ``if TYPE_CHECKING:`` does not (it never runs).
- models/ never imports workers/ (a model package is loaded without the pipeline).
- No product module over 400 lines (migrations excepted: they are generated history).

The graph function is checked first on small synthetic packages, so a rule that passes
is known to be able to fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("node", "workers", "models")
SIZED = (*PACKAGES, "training")  # training/ when the project has one
MAX_LINES = 400

Graph = dict[str, set[str]]


def _skipped(path: Path) -> bool:
    return "migrations" in path.parts or "__pycache__" in path.parts


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` under ``root``."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if _skipped(relative):
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` (its ``else`` runs, so it counts)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for statement in node.body:
                skipped.update(id(child) for child in ast.walk(statement))
    return skipped


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its nearest enclosing module of the product; None if outside it."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules ``module`` imports, lazy imports included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(filter(None, (_known(alias.name, modules) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, module, path.name == "__init__.py")
            for alias in node.names:
                # ``from pkg import name``: the submodule when ``name`` is one.
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in modules else _known(base, modules)
                if target:
                    found.add(target)
    found.discard(module)
    return found


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """Module -> the product modules it imports.

    A package importing its own submodules (its ``__init__`` re-exporting them) is left
    out: the submodule importing its package is then no circle.
    """
    modules = module_files(root, packages)
    graph: Graph = {}
    for module, path in modules.items():
        targets = imports_of(module, path, modules)
        graph[module] = {t for t in targets if not t.startswith(module + ".")}
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            vertex, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                elif target in on_stack:
                    low[vertex] = min(low[vertex], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[vertex])
            if low[vertex] == index[vertex]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == vertex:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def _report(component: list[str], graph: Graph) -> str:
    members = set(component)
    edges = [f"{m} -> {t}" for m in component for t in sorted(graph[m] & members)]
    return f"{', '.join(component)}: " + "; ".join(edges)


# ---- the rules checked on the product ------------------------------------------------


def test_no_import_circles() -> None:
    graph = import_graph(ROOT, PACKAGES)
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(_report(c, graph) for c in found)


def test_models_never_import_workers() -> None:
    graph = import_graph(ROOT, PACKAGES)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module == "models" or module.startswith("models.")
        for target in targets
        if target == "workers" or target.startswith("workers.")
    )
    assert not wrong, "models/ imports workers/:\n" + "\n".join(wrong)


def test_no_module_over_400_lines() -> None:
    packages = [p for p in SIZED if (ROOT / p).is_dir()]
    sizes = {
        path.relative_to(ROOT): len(path.read_text(encoding="utf-8").splitlines())
        for path in module_files(ROOT, packages).values()
    }
    over = sorted(f"{path}: {lines}" for path, lines in sizes.items() if lines > MAX_LINES)
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


def test_no_two_modules_share_a_name() -> None:
    # A reader looking for "temporal.py" should find one room, not two in different
    # folders; packages' __init__ files are the exception by nature.
    packages = [p for p in SIZED if (ROOT / p).is_dir()]
    by_name: dict[str, list[str]] = {}
    for path in module_files(ROOT, packages).values():
        if path.name != "__init__.py":
            by_name.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    shared = sorted(f"{name}: {', '.join(sorted(p))}" for name, p in by_name.items() if len(p) > 1)
    assert not shared, "modules with the same name:\n" + "\n".join(shared)


# ---- the checks can fail -------------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_lazy_import_circle_is_found(tmp_path: Path) -> None:
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.c import VALUE\n",  # its own submodule: no circle
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "def later():\n    from pkg.a import b\n    return b\n",
            "pkg/c.py": "import pkg\n\nVALUE = 1\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/d.py": "from ..c import VALUE\n",
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b"}  # relative, and a submodule named in ``from``
    assert graph["pkg.sub.d"] == {"pkg.c"}
    assert graph["pkg"] == set()
    assert circles(graph) == [["pkg.a", "pkg.b"]]


def test_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import B\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\n\n"
                "if TYPE_CHECKING:\n    from pkg.a import A\nelse:\n    import pkg.c\n\n"
                "class B: ...\n"
            ),
            "pkg/c.py": "",
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.b"] == {"pkg.c"}  # the else branch runs, so it counts
    assert circles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set(), "c": {"d"}, "d": {"c"}}, [["c", "d"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_circles_are_strongly_connected_components(graph: Graph, expected: list[list[str]]) -> None:
    assert circles(graph) == expected
