"""Explanations: every attribution method behind one signature, and their sanity checks.

``core.explain(model, x, target, method)`` runs a method of ``METHODS`` on a per-call isolated copy
of the model (``isolate``); ``methods`` holds one class per method, ``ig`` the adaptive Integrated
Gradients integrator, ``sanity`` the randomisation and deletion/insertion checks.
"""
from __future__ import annotations

from medcnn.explain.core import Explanation, explain, METHODS, resolve_target, black_value, DEFAULT_MEMORY_BUDGET

__all__ = ['Explanation', 'explain', 'METHODS', 'resolve_target', 'black_value', 'DEFAULT_MEMORY_BUDGET']
