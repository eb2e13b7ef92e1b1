"""Explanations: every attribution method behind one signature, and their sanity checks.

``explain(model, x, target, method)`` (in ``core``) runs a method of :data:`METHODS` on a
per-call isolated copy of the model (``isolate``). ``base`` declares the contract every
method fulfils (:class:`~medcnn.explain.base.AttributionMethod`), ``methods`` holds one
class per method and the registry, ``objective`` what is explained (by default the logit
difference that sets a softmax head's probability; ``objective="logit"`` for the single
logit), ``gating`` the probability-aware display data (:func:`at_operating_point`),
``ig`` the adaptive Integrated Gradients integrator, ``normalize`` the one heat-map
convention (:func:`normalize_heatmap`, numpy only), ``sanity`` the randomisation and
deletion/insertion checks.

Names are imported lazily (PEP 562): ``from medcnn.explain.methods import METHODS``, which
the command line's ``--help`` uses, does not import torch; ``from medcnn.explain import
explain`` works as usual.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Explanation", "explain", "METHODS", "OBJECTIVES", "at_operating_point", "judged_by_head",
           "resolve_target", "black_value", "DEFAULT_MEMORY_BUDGET", "evidence", "normalize_heatmap"]

_HOME = {
    "Explanation": "medcnn.explain.core",
    "explain": "medcnn.explain.core",
    "resolve_target": "medcnn.explain.core",
    "black_value": "medcnn.explain.core",
    "METHODS": "medcnn.explain.methods",
    "OBJECTIVES": "medcnn.explain.objective",
    "at_operating_point": "medcnn.explain.gating",
    "judged_by_head": "medcnn.explain.gating",
    "DEFAULT_MEMORY_BUDGET": "medcnn.explain.isolate",
    "evidence": "medcnn.explain.normalize",
    "normalize_heatmap": "medcnn.explain.normalize",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
