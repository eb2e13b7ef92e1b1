"""What an explanation explains: the score that sets the displayed probability.

A method of :data:`medcnn.explain.METHODS` attributes one scalar per image. Which scalar
is the *objective*:

* ``"difference"`` (the default for softmax heads): the target logit minus the other
  logit of a binary (2-logit) head, ``z_t - z_o``. The displayed probability is
  ``softmax(z / T)_t = sigmoid((z_t - z_o) / T)``: it depends on this difference only,
  so a model may express a class by *lowering the other logit* while its own logit does
  not move. A map of the single logit ``z_t`` is then empty (nothing raises ``z_t``)
  on a film the model calls positive; the map of the difference is not. With more than
  two softmax outputs the difference generalises to the log-odds
  ``z_t - logsumexp(z_j, j != t)`` (equal to ``z_t - z_o`` for two outputs): the
  softmax probability at temperature 1 is ``sigmoid`` of it.
* ``"logit"``: the target logit ``z_t`` alone. For sigmoid (multi-label) heads this *is*
  the quantity that sets the class probability (``sigmoid(z_t)``), so it is their
  default; for softmax heads it is kept as an option (the raw single-logit map).
* ``"auto"`` resolves to one of the two (:func:`resolve_objective`): what the model's
  :class:`~medcnn.models.head.Head` says (:attr:`~medcnn.models.head.Head.objective`), passed
  explicitly by the caller; without a head, ``"logit"`` for one output and ``"difference"``
  otherwise (a bare network is taken as a softmax classifier: pass the head of a multi-label
  model, or ``objective="logit"``).

:class:`ObjectiveHead` wraps a network so that output column ``t`` *is* the objective of
class ``t``: every method calls Captum (or the IG integrator) on the head with
``target=t`` and explains the objective with no method-specific code. IG completeness
holds for the objective: attributions sum to ``f(x) - f(baseline)`` of the head's column.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcnn.models.head import Head

__all__ = ["OBJECTIVES", "ObjectiveHead", "describe_objective", "objective_scores", "resolve_objective"]

#: Accepted values of ``explain(..., objective=...)``.
OBJECTIVES = ("auto", "difference", "logit")


def resolve_objective(objective: str, head: Head | None, num_outputs: int) -> str:
    """``"difference"`` or ``"logit"`` for a requested objective (see the module docstring).

    Args:
        objective: One of :data:`OBJECTIVES`.
        head: The model's decision rule, or None for a bare network (taken as softmax).
        num_outputs: Number of logits of the network.

    Returns:
        ``"difference"`` or ``"logit"``.

    Raises:
        ValueError: unknown objective, a head whose labels do not match the outputs, or
            ``"difference"`` for a one-output network or a sigmoid head (its classes do not
            compete).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if head is not None and len(head.labels) != num_outputs:
        raise ValueError(f"the network gives {num_outputs} outputs but its head names {len(head.labels)} "
                         f"labels ({', '.join(head.labels)})")
    if objective == "auto":
        return head.objective if head is not None else ("logit" if num_outputs < 2 else "difference")
    why = head.no_difference_reason if head is not None else "has a single output" if num_outputs < 2 else None
    if objective == "difference" and why:
        raise ValueError(f"objective 'difference' needs a softmax head with >= 2 outputs; the model {why}: "
                         "use objective='logit'")
    return objective


def objective_scores(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Objective of every class: (N, K) logits -> (N, K) scores, column t = class t's objective.

    ``"logit"``: the logits unchanged. ``"difference"``: ``z_t - z_o`` for K = 2 (exactly,
    no log-sum-exp rounding), ``z_t - logsumexp(z_j, j != t)`` for K > 2.

    Raises:
        ValueError: unknown kind, or ``"difference"`` with fewer than 2 columns.
    """
    if kind == "logit":
        return logits
    if kind != "difference":
        raise ValueError(f"objective kind must be 'difference' or 'logit', got {kind!r}")
    k = logits.shape[1]
    if k < 2:
        raise ValueError("objective 'difference' needs at least 2 logits")
    if k == 2:
        return logits - logits.flip(1)
    others = logits.unsqueeze(1).expand(-1, k, k)
    eye = torch.eye(k, dtype=torch.bool, device=logits.device)
    return logits - torch.logsumexp(others.masked_fill(eye, float("-inf")), dim=2)


class ObjectiveHead(nn.Module):
    """``net`` followed by :func:`objective_scores`: (N, C, H, W) -> (N, K).

    Holds ``net`` as its only child (so Captum's guided backprop finds the network's
    ReLUs) and has no state or hooks of its own: building one per call is free, and a
    shared ``net`` is not modified.

    Args:
        net: Network returning logits (N, K).
        kind: ``"difference"`` or ``"logit"``.
    """

    def __init__(self, net: nn.Module, kind: str):
        super().__init__()
        if kind not in ("difference", "logit"):
            raise ValueError(f"objective kind must be 'difference' or 'logit', got {kind!r}")
        self.net = net
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return objective_scores(self.net(x), self.kind)


def describe_objective(kind: str, target: int, num_outputs: int, labels: Sequence[str] | None = None) -> str:
    """Human-readable name of the explained score, e.g. ``"logit difference (PNEUMONIA - NORMAL)"``.

    Args:
        kind: ``"difference"`` or ``"logit"``.
        target: Explained class index.
        num_outputs: Number of logits.
        labels: Class names in logit order (default ``"class <i>"``).
    """
    names = list(labels) if labels is not None and len(labels) == num_outputs else [
        f"class {i}" for i in range(num_outputs)]
    if kind == "logit":
        return f"{names[target]} logit"
    if num_outputs == 2:
        return f"logit difference ({names[target]} - {names[1 - target]})"
    return f"log-odds ({names[target]} logit - logsumexp of the other logits)"
