"""Architecture rules of the package, checked on its source with :mod:`ast`.

* imports run down :data:`LAYERS` only: a unit imports units of lower layers, never a higher one
  nor a peer of its own layer (the one known exception is named in :data:`KNOWN_VIOLATIONS`);
* ``medcnn.app`` does not import ``medcnn.cli`` (the two front ends are peers);
* no module imports a private name (``_x``, a module or an attribute) of another subpackage;
* only ``medcnn/app/`` imports streamlit (the page scripts ``pages/`` and ``app.py`` are outside
  the package and may);
* the subpackages import each other without a cycle (module-level and function-level imports);
* nothing in the package touches ``sys.meta_path`` (no import hooks: a module path is a file);
* no module is longer than :data:`MAX_LINES` lines;
* only ``medcnn/notices.py`` touches the warning filters (``warnings.catch_warnings``,
  ``simplefilter``, ``filterwarnings``, ``resetwarnings``): the rest of the package collects or
  silences warnings through its helpers (the files not yet moved are named in
  :data:`KNOWN_WARNING_FILTERS`);
* ``python -m medcnn --help`` does not import torch;
* the scripts outside the package (``pages/``, ``app.py``, ``benchmarks/``) sit above every layer:
  they may import any medcnn module that exists, but pages and the router never import torch,
  torchvision or captum themselves, and the package never imports them (nor ``tests``).
* no code outside ``medcnn/models/`` branches on the kind of head (softmax or multi-label): the
  decision rule :class:`medcnn.models.head.Head` answers what a caller needs (``per_finding``,
  ``own_operating_point``, ``target_noun``, ...). :func:`head_kind_reads` finds, with :mod:`ast`,
  every read of the kind: ``.multilabel``, ``is_multilabel(...)``, ``head.kind``, a comparison or
  ``match`` with ``"sigmoid"`` / ``"softmax"``, a table indexed by ``card.head``. A read outside a
  test counts too: a kind bound to a name or returned is a branch one step removed.

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

#: The allowed import direction, written down once: layers from lowest to highest. A unit may
#: import the units of LOWER layers only; units sharing a layer are peers and import neither
#: each other nor anything above. Derived from the imports in the package and the documented
#: flow of an upload (app -> inference -> explain/visualize -> models -> preprocess -> io):
LAYERS: tuple[tuple[str, ...], ...] = (
    ("notices",),  # the one warnings channel (standard library only): every layer may use it
    ("io",),  # bytes/path -> pixels + metadata
    ("preprocess",),  # pixels -> model tensor + display image
    ("models",),  # architectures, checkpoint + card, the batch forward pass
    # checks around one image, on pixels and headers only: the out-of-scope gate (it scores
    # features a caller extracts), de-identification and sign-in
    ("ood", "privacy"),
    # what a model's output means: maps (explain) and numbers (evaluation: the only home of AUC,
    # calibration, and the loop over a dataset). Neither draws: no matplotlib below visualize.
    ("explain", "evaluation"),
    ("visualize",),  # draws both: the heat-map overlays, metric figures and the PDF report
    ("inference",),  # the serving path: Predictor, which card serves an image, the OOD gate's use
    # one image's record as it grows (image, prediction and gate verdict, maps): the type the serving
    # path's results are kept in, above what it holds; torch-free and importing no medcnn module
    ("analysis",),
    ("routing",),  # which model answers an image: the modality's card, then the models' gates
    ("scoring",),  # the one scoring engine: files or bytes in, one row per image out
    # the serving path run from elsewhere: across processes and machines (and training's steps
    # there); a PACS's DICOMweb in, confirmed DICOM results out
    ("distributed", "pacs"),
    ("training",),
    ("audit",),  # dataset and saliency audits: they train probes and run the serving path
    ("app", "cli"),  # the two front ends: the app's pages and the command line
    ("__main__",),  # ``python -m medcnn``: dispatches to the commands
)

#: Known imports against :data:`LAYERS`, each named, with its reason: (file, imported module).
#: TEMPORARY. Each must disappear when its owner moves the code; the test fails on any new
#: violation and on an entry that is no longer needed.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}

#: the one module that may touch the warning filters
WARNINGS_HOME = "medcnn/notices.py"
#: the calls that change the warning filters
WARNING_FILTER_CALLS = ("catch_warnings", "simplefilter", "filterwarnings", "resetwarnings")
#: Files that still touch the warning filters themselves, each with its reason. TEMPORARY: each
#: must move to :mod:`medcnn.notices` when its owner next changes it; the test fails on any new
#: file and on an entry that is no longer needed.
KNOWN_WARNING_FILTERS: dict[str, str] = {
    "medcnn/evaluation/metrics.py": "sklearn's ill-defined-metric notes (being changed by its owner)",
    "medcnn/io/dicom.py": "pydicom's decode warnings recorded into ImageMeta.warnings (being changed by its owner)",
    "medcnn/ood/validate.py": "unreadable validation files counted, not printed (being changed by its owner)",
}

#: scripts outside the package, above every layer; they may import any existing medcnn module
SCRIPTS = ("pages/*.py", "app.py", "benchmarks/*.py")
#: the page scripts and the router: thin, they call medcnn and never these directly
PAGE_SCRIPTS = ("pages/*.py", "app.py")
PAGE_FORBIDDEN = ("torch", "torchvision", "captum")
#: top-level names of the code outside the package, which the package never imports
OUTSIDE_PACKAGE = ("pages", "benchmarks", "tests", "app")


#: The one package that may ask which kind of head a model has (the decision rule and its card).
HEAD_HOME = "medcnn/models/"
#: Where the head-kind rule looks: the package and the scripts outside it.
HEAD_KIND_SCOPE = ("medcnn/**/*.py", *SCRIPTS)
#: The kinds of head, as a card names them.
HEAD_KIND_NAMES = ("softmax", "sigmoid")
#: Names whose read says the kind of head.
HEAD_KIND_FLAGS = ("multilabel", "is_multilabel")
#: Reads outside :data:`HEAD_HOME` that look like the head kind but are not, each with its reason:
#: (file, what :func:`head_kind_reads` reports). The test fails on an entry no longer needed.
#: ``medcnn/training/heads.py`` (the per-head training strategy) needs no entry: it picks its
#: strategy from the run's configuration (``cfg.findings``), not from a head.
KNOWN_KIND_READS: dict[tuple[str, str], str] = {
    ("medcnn/training/data.py", ".multilabel"): (
        "the training dataset's own property: whether its targets are an (N, C) findings matrix or one "
        "class index per image (the shape of the target array a batch is built from), not a head"),
}


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


def layer_index(layers: tuple[tuple[str, ...], ...] = LAYERS) -> dict[str, int]:
    """``{unit: its layer's position in layers}`` (0 = lowest)."""
    return {unit: i for i, layer in enumerate(layers) for unit in layer}


def package_units() -> set[str]:
    """Every unit of the package: its subpackages and top-level modules (not the root ``__init__``)."""
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    return subpackages | {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}


def direction_violations(imports: Iterable[Import], layers: tuple[tuple[str, ...], ...] = LAYERS,
                         known: Iterable[tuple[str, str]] = ()) -> list[str]:
    """``file:line: what`` for each import of a unit that is not in a lower layer than the importer.

    Imports of the root package (``medcnn``, ``__version__``) are no dependency; ``known``
    ``(file, module)`` pairs are skipped.
    """
    index, known = layer_index(layers), set(known)
    found = []
    for imp in imports:
        a, b = _own_unit(imp.source), unit_of(imp.target)
        if a == b or "medcnn" in (a, b) or (str(imp.source.relative_to(REPO)), imp.module) in known:
            continue
        if a not in index or b not in index:
            found.append(f"{imp.where}: {a} imports {b}: give {sorted({a, b} - set(index))} a layer")
        elif index[b] >= index[a]:
            kind = "a peer" if index[b] == index[a] else "a higher layer"
            found.append(f"{imp.where}: {a} (layer {index[a]}) imports {imp.target} from {b}, "
                         f"{kind} (layer {index[b]})")
    return found


def meta_path_uses() -> list[str]:
    """``file:line`` of every reference to ``sys.meta_path`` / ``sys.path_hooks`` in the package."""
    found: list[tuple[Path, int]] = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = ([node.attr] if isinstance(node, ast.Attribute) else
                     [a.name for a in node.names] if isinstance(node, ast.ImportFrom) and node.module == "sys"
                     else [])
            if {"meta_path", "path_hooks"} & set(names):
                found.append((path, node.lineno))
    return [f"{path.relative_to(REPO)}:{line}" for path, line in sorted(set(found))]


def warning_filter_uses(paths: Iterable[Path]) -> list[str]:
    """``file:line: call`` for each call that changes the warning filters, outside :data:`WARNINGS_HOME`.

    Both spellings count: ``warnings.simplefilter(...)`` and a name imported from :mod:`warnings`
    (``from warnings import catch_warnings``).
    """
    found = []
    for path in paths:
        rel = path.relative_to(REPO).as_posix()
        if rel == WARNINGS_HOME:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        from_warnings = {alias.asname or alias.name for node in ast.walk(tree)
                         if isinstance(node, ast.ImportFrom) and node.module == "warnings" for alias in node.names
                         if alias.name in WARNING_FILTER_CALLS}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr in WARNING_FILTER_CALLS
                    and isinstance(f.value, ast.Name) and f.value.id == "warnings"):
                found.append(f"{rel}:{node.lineno}: warnings.{f.attr}")
            elif isinstance(f, ast.Name) and f.id in from_warnings:
                found.append(f"{rel}:{node.lineno}: {f.id}")
    return found


def scripts(patterns: Iterable[str]) -> list[Path]:
    return sorted({p for pattern in patterns for p in REPO.glob(pattern)})


def _is_module(dotted: str) -> bool:
    """True when ``dotted`` names a module or package file of the repository."""
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def missing_medcnn_modules(paths: Iterable[Path]) -> list[str]:
    """``file:line: module`` for each import of a medcnn module path that has no file.

    ``from medcnn.x import y`` needs ``medcnn/x``; ``y`` may be a name (checked when imported).
    """
    found = []
    for path in paths:
        for module, line, name in imports_of(path):
            if module != "medcnn" and not module.startswith("medcnn."):
                continue
            if not _is_module(module):
                where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                found.append(f"{where}:{line}: {module}")
    return found


def _names_head(node: ast.AST) -> bool:
    """True for ``head``, ``card.head_rule``, ``self._head`` ...: an expression naming a head."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "head" in name.lower()


def _kind_constant(node: ast.AST) -> str | None:
    """``"sigmoid"`` / ``"softmax"`` for such a constant, or a tuple/list/set holding one."""
    if isinstance(node, ast.Constant) and node.value in HEAD_KIND_NAMES:
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return next((c for c in map(_kind_constant, node.elts) if c), None)
    return None


def _kind_read(node: ast.AST) -> str | None:
    """What ``node`` reads of the head kind (module docstring), or None."""
    if isinstance(node, ast.Attribute) and node.attr in HEAD_KIND_FLAGS:
        return f".{node.attr}"
    if isinstance(node, ast.Name) and node.id in HEAD_KIND_FLAGS:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr == "kind" and _names_head(node.value):
        return f"{ast.unparse(node)}"
    if isinstance(node, ast.Compare):
        kind = next((c for c in map(_kind_constant, [node.left, *node.comparators]) if c), None)
        return f"a comparison with {kind!r}" if kind else None
    if isinstance(node, ast.match_case):
        kinds = [n.value.value for n in ast.walk(node.pattern)
                 if isinstance(n, ast.MatchValue) and _kind_constant(n.value)]
        return f"a match case {kinds[0]!r}" if kinds else None
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Attribute) and node.slice.attr == "head":
        return f"a table indexed by {ast.unparse(node.slice)}"
    return None


def head_kind_reads(source: str, where: str) -> list[str]:
    """``where:line: <what>`` for every read of the head kind in ``source`` (module docstring).

    A function or variable named ``multilabel`` / ``is_multilabel`` counts when it is read; its
    definition alone does not, nor a module of that name (``multilabel.make_loss``).
    """
    tree = ast.parse(source, filename=where)
    modules_used = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}  # ``multilabel.f``
    found = []
    for node in ast.walk(tree):
        what = None if id(node) in modules_used and isinstance(node, ast.Name) else _kind_read(node)
        if what:
            line = getattr(node, "lineno", None) or node.pattern.lineno  # a match_case has no line
            found.append((line, what))
    return [f"{where}:{line}: {what}" for line, what in sorted(found)]


def kind_reads_outside_models() -> list[str]:
    """:func:`head_kind_reads` over :data:`HEAD_KIND_SCOPE`, outside :data:`HEAD_HOME`."""
    found = []
    for path in scripts(HEAD_KIND_SCOPE):
        rel = path.relative_to(REPO).as_posix()
        if not rel.startswith(HEAD_HOME):
            found += head_kind_reads(path.read_text(encoding="utf-8"), rel)
    return found


def _known_kind_read(found: str) -> tuple[str, str]:
    where, _line, what = found.split(":", 2)
    return where, what.strip()


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


def test_direction_checker_flags_upward_and_peer_imports_only():
    def imp(source: str, module: str) -> Import:
        return Import(REPO / source, 7, module, None)

    layers = (("io",), ("explain", "evaluation"), ("visualize",))
    found = direction_violations([
        imp("medcnn/visualize/heatmap.py", "medcnn.explain.normalize"),  # down: allowed
        imp("medcnn/explain/core.py", "medcnn.visualize.heatmap"),  # up
        imp("medcnn/evaluation/plots.py", "medcnn.explain.core"),  # peer
        imp("medcnn/io/reader.py", "medcnn.io.dicom"),  # same unit
        imp("medcnn/io/reader.py", "medcnn"),  # the root package
        imp("medcnn/io/x.py", "medcnn.visualize"),  # up, but known
    ], layers, known=[("medcnn/io/x.py", "medcnn.visualize")])
    assert [f.split(":")[0] for f in found] == ["medcnn/explain/core.py", "medcnn/evaluation/plots.py"]
    assert "a higher layer (layer 2)" in found[0] and "a peer (layer 1)" in found[1]


def test_meta_path_finder_flags_any_use(tmp_path, monkeypatch):
    pkg = tmp_path / "medcnn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import sys\nsys.meta_path.append(object())\n")
    (pkg / "hooks.py").write_text("from sys import path_hooks\n")
    (pkg / "ok.py").write_text("import sys\nprint(sys.path)\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    monkeypatch.setattr(sys.modules[__name__], "modules", lambda: tuple(sorted(pkg.rglob("*.py"))))
    assert meta_path_uses() == ["medcnn/__init__.py:2", "medcnn/hooks.py:1"]


def test_warning_filter_finder_flags_raw_filters_outside_the_helper(tmp_path, monkeypatch):
    pkg = tmp_path / "medcnn"
    pkg.mkdir()
    (pkg / "notices.py").write_text("import warnings\nwarnings.simplefilter('ignore')\n")  # the helper: allowed
    (pkg / "a.py").write_text("import warnings\nwith warnings.catch_warnings():\n"
                              "    warnings.filterwarnings('ignore')\n")
    (pkg / "b.py").write_text("from warnings import simplefilter as sf\nsf('ignore')\n")
    (pkg / "ok.py").write_text("import warnings\nfrom medcnn.notices import quiet\nwarnings.warn('x')\n"
                               "with quiet(UserWarning, reason='r'):\n    pass\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert warning_filter_uses(sorted(pkg.rglob("*.py"))) == [
        "medcnn/a.py:2: warnings.catch_warnings", "medcnn/a.py:3: warnings.filterwarnings", "medcnn/b.py:2: sf"]


def test_missing_module_finder_flags_old_paths(tmp_path):
    page = tmp_path / "page.py"
    page.write_text("from medcnn.card import ModelCard\nfrom medcnn.models.card import ModelCard\n"
                    "import medcnn.visualize.plots\nfrom medcnn import overlay\nimport medcnn.commands.x\n")
    found = missing_medcnn_modules([page])
    assert [f.split(": ", 1)[1] for f in found] == ["medcnn.card", "medcnn.commands.x"]
    assert [f.rsplit(":", 2)[1] for f in found] == ["1", "5"]


# --------------------------------------------------------------------------- the rules
def test_head_kind_finder_flags_branches_on_the_kind_and_nothing_else():
    planted = (
        "if card.multilabel:\n    rows = 1\n"  # 1
        "x = 'a' if is_multilabel(card) else 'b'\n"  # 3
        "while head.kind == 'sigmoid':\n    break\n"  # 4: head.kind, and the comparison
        "y = [r for r in rows if card.head != 'softmax']\n"  # 6
        "match card.head:\n    case 'sigmoid':\n        pass\n"  # 7, the case on 8
        "flag = card.head_rule.multilabel\n"  # 10: a flag, branched on later
        "view = VIEWS[card.head]\n"  # 11
        "ok = card.head in ('softmax', 'sigmoid')\n"  # 12
    )
    assert head_kind_reads(planted, "m.py") == [
        "m.py:1: .multilabel", "m.py:3: is_multilabel", "m.py:4: a comparison with 'sigmoid'",
        "m.py:4: head.kind", "m.py:6: a comparison with 'softmax'", "m.py:8: a match case 'sigmoid'",
        "m.py:10: .multilabel", "m.py:11: a table indexed by card.head",
        "m.py:12: a comparison with 'softmax'"]
    asking = (
        "if card.head_rule.per_finding:\n    rows = head.decide(p).findings\n"
        "parser.add_argument('--head', choices=('softmax', 'sigmoid'))\n"
        "strategy = HEADS['sigmoid' if cfg.findings else 'softmax']\n"
        "text = f'head {card.head}'\n"
        "def is_multilabel(card):\n    return True\n"
        "kind = objective.kind\n"
        "loss = multilabel.make_multilabel_loss(x)\n"
    )
    assert head_kind_reads(asking, "m.py") == []


def test_only_the_models_package_branches_on_the_head_kind():
    found = [f for f in kind_reads_outside_models() if _known_kind_read(f) not in KNOWN_KIND_READS]
    assert not found, ("ask the head (card.head_rule: per_finding, own_operating_point, target_noun, ...) "
                       "instead of branching on its kind:\n" + "\n".join(found))


def test_known_kind_reads_are_still_needed():
    stale = sorted(set(KNOWN_KIND_READS) - {_known_kind_read(f) for f in kind_reads_outside_models()})
    assert not stale, "remove from KNOWN_KIND_READS:\n" + "\n".join(map(str, stale))


def test_no_private_name_is_imported_from_another_subpackage():
    found = private_imports(medcnn_imports())
    assert not found, "private names imported across subpackages:\n" + "\n".join(found)


def test_every_unit_has_a_layer():
    placed = [unit for layer in LAYERS for unit in layer]
    assert len(placed) == len(set(placed)), "a unit is in two layers"
    assert package_units() == set(placed), ("give each new unit a layer in LAYERS, remove gone ones: "
                                            f"{sorted(package_units() ^ set(placed))}")


def test_imports_run_down_the_layers():
    found = direction_violations(medcnn_imports(), known=KNOWN_VIOLATIONS)
    order = " < ".join("/".join(layer) for layer in LAYERS)
    assert not found, f"imports against the layer order {order}:\n" + "\n".join(found)


def test_known_violations_are_still_needed():
    # a fixed violation must leave the allow-list, so it cannot come back unnoticed
    present = {(str(imp.source.relative_to(REPO)), imp.module) for imp in medcnn_imports()}
    stale = [f"{f} -> {m}" for f, m in KNOWN_VIOLATIONS if (f, m) not in present
             or not direction_violations([i for i in medcnn_imports()
                                          if (str(i.source.relative_to(REPO)), i.module) == (f, m)])]
    assert not stale, "remove from KNOWN_VIOLATIONS (no longer imported):\n" + "\n".join(stale)


def test_the_app_does_not_import_the_command_line():
    found = [f"{imp.where}: imports {imp.target}" for imp in medcnn_imports()
             if _own_unit(imp.source) == "app" and unit_of(imp.target) == "cli"
             and (str(imp.source.relative_to(REPO)), imp.module) not in KNOWN_VIOLATIONS]
    assert not found, "medcnn/app imports medcnn/cli (move the shared code below both):\n" + "\n".join(found)


def test_the_package_installs_no_import_hook():
    found = meta_path_uses()
    assert not found, "sys.meta_path / sys.path_hooks used in the package:\n" + "\n".join(found)


def test_scripts_import_existing_medcnn_modules_only():
    # pages, the router, benchmarks and tests sit above every layer; an old module path
    # (``medcnn.card``) has no file and no import hook to serve it
    found = missing_medcnn_modules([*scripts(SCRIPTS), *sorted((REPO / "tests").rglob("*.py"))])
    assert not found, "imports of medcnn module paths that do not exist:\n" + "\n".join(found)


def test_pages_do_not_import_torch_or_captum():
    found = [f"{path.relative_to(REPO)}:{line}: imports {module}"
             for path in scripts(PAGE_SCRIPTS) for module, line, _ in imports_of(path)
             if module.split(".")[0] in PAGE_FORBIDDEN]
    assert scripts(PAGE_SCRIPTS), "no page scripts found"
    assert not found, "pages call medcnn, never torch/captum directly:\n" + "\n".join(found)


def test_the_package_does_not_import_code_outside_it():
    found = [f"{path.relative_to(REPO)}:{line}: imports {module}"
             for path in modules() for module, line, _ in imports_of(path)
             if module.split(".")[0] in OUTSIDE_PACKAGE]
    assert not found, "medcnn imports pages/benchmarks/tests/app.py:\n" + "\n".join(found)


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


def test_only_the_notices_module_touches_the_warning_filters():
    found = [f for f in warning_filter_uses(modules()) if f.split(":")[0] not in KNOWN_WARNING_FILTERS]
    assert not found, ("collect warnings with medcnn.notices.collected() or silence a library's with "
                       "medcnn.notices.quiet(category, reason=...), not with the warnings module:\n" + "\n".join(found))


def test_known_warning_filters_are_still_needed():
    present = {f.split(":")[0] for f in warning_filter_uses(modules())}
    stale = sorted(set(KNOWN_WARNING_FILTERS) - present)
    assert not stale, "remove from KNOWN_WARNING_FILTERS (they use medcnn.notices now):\n" + "\n".join(stale)


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
