"""The modules of medcnn.training import each other without a cycle and without private names.

tests/test_architecture.py checks these rules between subpackages; this checks them inside the
training package, where one training run is assembled from several modules (loop, fit, heads).
"""
from __future__ import annotations

import ast
from pathlib import Path

import medcnn.training

TRAINING = Path(medcnn.training.__file__).resolve().parent
PREFIX = "medcnn.training."


def _edges() -> list[tuple[str, str, str | None, int]]:
    """``(importer, imported module, imported name or None, line)`` for every import between training modules,
    at any nesting level (function-level imports included)."""
    out = []
    for path in sorted(TRAINING.glob("*.py")):
        me = path.stem
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module == "medcnn.training":  # from medcnn.training import losses
                    out += [(me, a.name, None, node.lineno) for a in node.names if (TRAINING / f"{a.name}.py").is_file()]
                elif node.module.startswith(PREFIX):
                    out += [(me, node.module[len(PREFIX):], a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.Import):
                out += [(me, a.name[len(PREFIX):], None, node.lineno) for a in node.names if a.name.startswith(PREFIX)]
    return [e for e in out if e[0] != "__init__" and e[1] != e[0]]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_chain():
    assert _cycle({"loop": {"findings"}, "findings": {"loop"}}) == ["findings", "loop", "findings"]
    assert _cycle({"loop": {"fit", "heads"}, "fit": {"heads"}, "heads": {"data"}}) is None


def test_training_modules_import_each_other_without_a_cycle():
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in _edges():
        graph.setdefault(src, set()).add(dst)
    assert "fit" in graph.get("loop", set())  # the graph is read
    assert _cycle(graph) is None


def test_no_training_module_imports_a_private_name_of_another():
    private = [f"{src}.py:{line} imports {name} from {dst}" for src, dst, name, line in _edges()
               if name and name.startswith("_") and not name.startswith("__")]
    assert not private, "\n".join(private)
