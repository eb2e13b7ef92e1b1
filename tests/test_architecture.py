"""Architecture rules of the package, checked on its source with :mod:`ast`.

* no module imports a private name (``_x``, a module or an attribute) of another subpackage;
* only ``medcnn/app/`` imports streamlit (the page scripts ``pages/`` and ``app.py`` are outside
  the package and may);
* the subpackages import each other without a cycle (module-level and function-level imports);
* no module is longer than :data:`MAX_LINES` lines;
* ``python -m medcnn --help`` does not import torch.

A "unit" is a subpackage (``medcnn/io/`` -> ``io``) or a top-level module
(``medcnn/inference.py`` -> ``inference``). Each failure lists every offending import as
``file:line``.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import medcnn

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "medcnn"
MAX_LINES = 400
#: the one unit allowed to import streamlit
STREAMLIT_UNIT = "app"


@dataclass(frozen=True)
class Import:
    """One ``import`` / ``from ... import`` of a medcnn module, resolved to absolute names."""

    source: Path  # the importing file
    line: int
    module: str  # absolute module imported from (``medcnn.io.reader``)
    name: str | None  # the imported attribute / submodule (``from m import name``), else None

    @property
    def where(self) -> str:
        return f"{self.source.relative_to(REPO)}:{self.line}"

    @property
    def target(self) -> str:
        """The module or attribute path the import refers to (``medcnn.io.reader.read_image``)."""
        return f"{self.module}.{self.name}" if self.name else self.module


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def unit_of(dotted: str) -> str:
    """Unit of a ``medcnn...`` path: its first component after ``medcnn`` (``"medcnn"`` for the root).

    A name exported lazily by ``medcnn/__init__.py`` (``from medcnn import read_image``) belongs
    to the unit of the module defining it.
    """
    parts = dotted.split(".")
    if len(parts) == 1:
        return "medcnn"
    head = parts[1]
    if head in medcnn._EXPORTS:  # the lazy public API of the root package
        return unit_of(medcnn._EXPORTS[head])
    if (PACKAGE / head).is_dir() or (PACKAGE / f"{head}.py").is_file():
        return head
    return "medcnn"  # an attribute of the root package itself (``__version__``)


@cache
def modules() -> tuple[Path, ...]:
    return tuple(sorted(PACKAGE.rglob("*.py")))


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports_of(path: Path) -> tuple[tuple[str, int, str | None], ...]:
    """``(module, line, name)`` of every import in ``path``, at any nesting level."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[str, int, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(path, node)
            out += [(module, node.lineno, alias.name) for alias in node.names]
    return tuple(out)


@cache
def medcnn_imports() -> tuple[Import, ...]:
    out = []
    for path in modules():
        for module, line, name in imports_of(path):
            if module == "medcnn" or module.startswith("medcnn."):
                out.append(Import(path, line, module, name))
    return tuple(out)


def _own_unit(path: Path) -> str:
    return unit_of(_module_name(path))


def private_imports(imports: Iterable[Import]) -> list[str]:
    """``file:line: what`` for each private name (module or attribute) imported from another unit."""
    found = []
    for imp in imports:
        if _own_unit(imp.source) == unit_of(imp.target):
            continue
        private = [p for p in imp.target.split(".")[1:] if _is_private(p)]
        if private:
            found.append(f"{imp.where}: imports private {imp.target} into unit "
                         f"{_own_unit(imp.source)!r}")
    return found


def streamlit_imports() -> list[str]:
    found = []
    for path in modules():
        if _own_unit(path) == STREAMLIT_UNIT:
            continue
        for module, line, _ in imports_of(path):
            if module.split(".")[0] == "streamlit":
                found.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    return found


def unit_graph(imports: Iterable[Import]) -> dict[str, dict[str, list[Import]]]:
    """``{unit: {imported unit: [the imports making that edge]}}`` (edges between distinct units)."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for imp in imports:
        a, b = _own_unit(imp.source), unit_of(imp.target)
        if a != b and b != "medcnn":  # importing the root package itself is no dependency
            graph.setdefault(a, {}).setdefault(b, []).append(imp)
    return graph


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Cycles ``[a, b, ..., a]``: a shortest one through every unit that lies on any cycle.

    The strongly connected components come from Tarjan's algorithm (Tarjan 1972); inside a
    component, a breadth-first search gives the shortest cycle through each of its units
    (one cycle per rotation class, so ``a -> b -> a`` is listed once).
    """
    found: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for comp in _components(edges):
        for node in sorted(comp):
            cycle = _shortest_cycle(node, comp, edges)
            ring = cycle[:-1]
            key = min(tuple(ring[i:] + ring[:i]) for i in range(len(ring)))
            if key not in seen:
                seen.add(key)
                found.append(cycle)
    return found


def _components(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one unit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


def _shortest_cycle(start: str, comp: set[str], edges: dict[str, set[str]]) -> list[str]:
    """Shortest cycle ``[start, ..., start]`` inside a strongly connected component (BFS)."""
    prev: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w not in comp:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {comp}")  # unreachable for a component


def long_modules() -> list[str]:
    found = []
    for path in modules():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            found.append(f"{path.relative_to(REPO)}: {n} lines")
    return found


# --------------------------------------------------------------------------- the checker itself
def test_cycle_finder_reports_a_cycle_and_accepts_a_dag():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"x": {"y"}, "y": {"x"}}) == [["x", "y", "x"]]
    # two cycles sharing a unit: both are reported
    assert find_cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"a"}}) == [["a", "b", "a"], ["c", "a", "c"]]


def test_unit_of_names_subpackages_top_level_modules_and_lazy_exports():
    assert unit_of("medcnn.io.reader") == "io"
    assert unit_of("medcnn.inference.predict_logits") == "inference"
    assert unit_of("medcnn.read_image") == "io"  # medcnn/__init__.py exports it lazily
    assert unit_of("medcnn") == "medcnn"
    assert unit_of("medcnn.__version__") == "medcnn"


def test_private_names_are_flagged_across_units_only():
    def imp(source: str, module: str, name: str | None) -> Import:
        return Import(REPO / source, 1, module, name)

    found = private_imports([
        imp("medcnn/app/state.py", "medcnn.explain.isolate", "_probe"),  # attribute of another unit
        imp("medcnn/cli/x.py", "medcnn.preprocess._steps", "Window"),  # private module of another unit
        imp("medcnn/app/cards.py", "medcnn.app.state", "_mtime"),  # same unit: allowed
        imp("medcnn/cli/x.py", "medcnn", "__version__"),  # dunder: public
        imp("medcnn/cli/x.py", "medcnn.io", "read_image"),
    ])
    assert [f.split(":")[0] for f in found] == ["medcnn/app/state.py", "medcnn/cli/x.py"]
    assert "medcnn.explain.isolate._probe" in found[0] and "medcnn.preprocess._steps" in found[1]


def test_unit_graph_joins_module_and_function_level_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "medcnn"
    (pkg / "training").mkdir(parents=True)
    (pkg / "audit").mkdir()
    (pkg / "training" / "boxsup.py").write_text("from medcnn.audit.regions import parse_boxes\n")
    (pkg / "audit" / "table.py").write_text("def f():\n    from medcnn.training.data import read_labels\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    imports = [Import(path, line, module, name) for path in sorted(pkg.rglob("*.py"))
               for module, line, name in imports_of.__wrapped__(path)]
    graph = unit_graph(imports)
    assert {a: sorted(bs) for a, bs in graph.items()} == {"audit": ["training"], "training": ["audit"]}
    assert find_cycles({a: set(bs) for a, bs in graph.items()}) == [["audit", "training", "audit"]]


def test_relative_imports_are_resolved(tmp_path, monkeypatch):
    pkg = tmp_path / "medcnn" / "io"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("from . import _raw\nfrom ..models.card import _c\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert imports_of.__wrapped__(pkg / "x.py") == (("medcnn.io", 1, "_raw"), ("medcnn.models.card", 2, "_c"))


# --------------------------------------------------------------------------- the rules
def test_no_private_name_is_imported_from_another_subpackage():
    found = private_imports(medcnn_imports())
    assert not found, "private names imported across subpackages:\n" + "\n".join(found)


def test_only_the_app_subpackage_imports_streamlit():
    found = streamlit_imports()
    assert not found, "streamlit imported outside medcnn/app/:\n" + "\n".join(found)


def test_subpackages_import_each_other_without_a_cycle():
    graph = unit_graph(medcnn_imports())
    cycles = find_cycles({a: set(bs) for a, bs in graph.items()})
    lines = []
    for cycle in cycles:
        lines.append(" -> ".join(cycle))
        for a, b in zip(cycle, cycle[1:]):
            lines += [f"    {a} -> {b}: {imp.where} imports {imp.target}" for imp in graph[a][b]]
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(lines)


def test_no_module_is_longer_than_400_lines():
    found = long_modules()
    assert not found, f"modules over {MAX_LINES} lines:\n" + "\n".join(found)


def test_cli_help_does_not_import_torch():
    wrapper = ("import runpy, sys\n"
               "sys.argv = ['medcnn', '--help']\n"
               "try:\n"
               "    runpy.run_module('medcnn', run_name='__main__', alter_sys=True)\n"
               "except SystemExit as e:\n"
               "    assert e.code in (0, None), e.code\n"
               "print('\\nheavy:', sorted(m for m in ('torch', 'torchvision', 'captum', 'streamlit') "
               "if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", wrapper], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m medcnn" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "heavy: []"


def test_no_test_module_changes_torch_threads_at_import():
    """Global state stays the conftest fixture's business: no module-level set_num_threads."""
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted((Path(__file__).parent).rglob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Expr) and "set_num_threads" in ast.unparse(node):
                offenders.append(str(path))
    assert not offenders, offenders
