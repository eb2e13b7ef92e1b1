"""Explanations: every attribution method behind one signature, and their sanity checks.

``explain(model, x, target, method)`` (in ``core``) runs a method of :data:`METHODS` on a
per-call isolated copy of the model (``isolate``). ``base`` declares the contract every
method fulfils (:class:`~medcnn.explain.base.AttributionMethod`), ``methods`` holds one
class per method and the registry, ``ig`` the adaptive Integrated Gradients integrator,
``sanity`` the randomisation and deletion/insertion checks.

Names are imported lazily (PEP 562): ``from medcnn.explain.methods import METHODS``, which
the command line's ``--help`` uses, does not import torch; ``from medcnn.explain import
explain`` works as usual.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Explanation", "explain", "METHODS", "resolve_target", "black_value", "DEFAULT_MEMORY_BUDGET"]

_HOME = {
    "Explanation": "medcnn.explain.core",
    "explain": "medcnn.explain.core",
    "resolve_target": "medcnn.explain.core",
    "black_value": "medcnn.explain.core",
    "METHODS": "medcnn.explain.methods",
    "DEFAULT_MEMORY_BUDGET": "medcnn.explain.isolate",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
