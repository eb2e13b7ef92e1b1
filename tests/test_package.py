"""The package surface: lazy public names, a torch-free ``import medcnn``, the command line."""
from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import medcnn
from medcnn.__main__ import COMMANDS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name", sorted(medcnn._EXPORTS))
def test_public_name_resolves_to_its_module_object(name):
    module = importlib.import_module(medcnn._EXPORTS[name])
    assert name in medcnn.__all__
    assert getattr(medcnn, name) is getattr(module, name)
    assert name in getattr(module, "__all__", [name]), f"{name} is not public in {module.__name__}"


def test_all_lists_exports_and_version_only():
    assert set(medcnn.__all__) == set(medcnn._EXPORTS) | {"__version__"}
    assert isinstance(medcnn.__version__, str)
    assert set(dir(medcnn)) == set(medcnn.__all__)


def test_no_export_shadows_a_submodule():
    # ``import medcnn.x`` binds the module to ``medcnn.x``; an export named ``x`` would flip.
    submodules = {m.name for m in pkgutil.iter_modules(medcnn.__path__)}
    assert "explain" in submodules and "training" in submodules  # known names of subpackages
    assert not set(medcnn._EXPORTS) & submodules


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        medcnn.not_a_name  # noqa: B018
    assert not hasattr(medcnn, "not_a_name")


def test_import_medcnn_does_not_import_torch():
    out = _python("-c", "import medcnn, sys; print('torch' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_cli_help_exits_zero(command):
    args = ["-m", "medcnn"] + ([command] if command else []) + ["--help"]
    out = _python(*args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: python -m medcnn{' ' + command if command else ''}")
    assert "error" not in out.stderr.lower()
    if command is None:
        assert all(name in out.stdout for name in COMMANDS)


def test_import_medcnn_leaves_the_import_system_alone():
    # The flat first layout's module paths (``medcnn.card``, ``medcnn.commands.x``) are gone:
    # no finder is added to ``sys.meta_path`` to serve them.
    code = ("import sys; before = list(sys.meta_path); import medcnn\n"
            "print(sys.meta_path == before)\n"
            "try:\n    import medcnn.card\nexcept ModuleNotFoundError as e:\n    print(e.name)\n")
    out = _python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "medcnn.card"]
