"""Saliency maps behind one signature: ``explain(model, x, target, method, **options)``.

Conventions (the same for every method)
---------------------------------------
* Maps explain the class **logit** (model output before softmax), for binary (2-logit)
  and multi-class heads alike.
* ``Explanation.heatmap``: float32 (H, W) at the model input size, in [0, 1], 1 = most
  important, normalised by :func:`medcnn.visualize.normalize_heatmap` (the one place).
* ``Explanation.attribution``: float32 (H, W), signed, raw units (logit), summed over
  input channels; for Grad-CAM the layer map before ReLU, bilinearly upsampled.

Safety on a shared model
------------------------
Every call works on a private copy of ``x`` and on :func:`isolated_copy` of the model
(shallow module copies sharing weight storage; see ``medcnn/_attribution/_isolate.py``).
Captum's hooks are registered on the copy only, so the caller's model never carries a
hook, its ``training`` flag and ``requires_grad`` flags are untouched (explanations always
run in eval mode), and concurrent threads cannot see each other's hooks: results are
identical to sequential runs without any lock. Random methods use private generators.
Methods that need only input gradients (IG, SmoothGrad, occlusion) run on a cached,
BatchNorm-folded, channels-last deep copy (:func:`fast_copy`) that nothing ever hooks.

Target layers
-------------
``layer`` is a dotted module name (``"layer4"``, ``"features.norm5"``) resolved with
``get_submodule``. Default: ``model.target_layer`` if the model has such a string
attribute, else the last module (in execution order) with a spatial 4-D output.
torchvision DenseNet-121 applies ``F.relu(inplace=True)`` to the output of
``features.norm5``; Captum keeps a clone of the hooked layer output, so Grad-CAM on
``features.norm5`` is correct here (tested against a hand-written computation); the
pre-norm ``features.denseblock4`` also works and avoids the issue in tools that do not
clone (e.g. pytorch-grad-cam).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medcnn.explain.isolate import DEFAULT_MEMORY_BUDGET, fast_copy, isolated_copy, probe
from medcnn.explain.methods import (
    Context,
    GradCAMMethod,
    GuidedGradCAMMethod,
    IntegratedGradientsMethod,
    OcclusionMethod,
    SmoothGradMethod,
)
from medcnn.visualize import normalize_heatmap

__all__ = ["Explanation", "explain", "METHODS", "resolve_target", "black_value", "DEFAULT_MEMORY_BUDGET"]

#: Method name -> class (attributes ``label``, ``passes_randomisation_check``,
#: ``description``): feeds the UI drop-down.
METHODS: dict[str, type] = {
    "gradcam": GradCAMMethod,
    "integrated_gradients": IntegratedGradientsMethod,
    "smoothgrad": SmoothGradMethod,
    "occlusion": OcclusionMethod,
    "guided_gradcam": GuidedGradCAMMethod,
}


@dataclass
class Explanation:
    """Result of :func:`explain`.

    Attributes:
        heatmap: float32 (H, W) in [0, 1], 1 = most important.
        attribution: float32 (H, W) signed raw attribution (see module docstring).
        method: Registry name.
        params: Parameters actually used (layer, baseline, steps, batch sizes, ...).
        seconds: Wall time of the call.
        delta: Convergence delta ``sum(attr) - (f(x) - f(baseline))`` for path methods.
        target: Explained class index.
    """

    heatmap: np.ndarray
    attribution: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    delta: float | None = None
    target: int = 0


def resolve_target(target: int | str, labels: Sequence[str] | None, num_outputs: int) -> int:
    """Class index from an int or a label name (``labels`` in logit order).

    Raises:
        ValueError: unknown label, missing ``labels``, or index out of range.
    """
    if isinstance(target, str):
        if labels is None:
            raise ValueError(f"target {target!r} is a label name: pass labels=[...] in logit order")
        if target not in labels:
            raise ValueError(f"target {target!r} is not one of the labels {list(labels)}")
        target = list(labels).index(target)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ValueError(f"target must be a class index or label name, got {target!r}")
    if not 0 <= int(target) < num_outputs:
        raise ValueError(f"target {target} out of range for a model with {num_outputs} outputs")
    return int(target)


def black_value(pipeline: Any) -> float:
    """Normalised tensor value of display value 0 for a :class:`medcnn.preprocess.Pipeline`.

    Pass it as ``baseline_value`` with ``baseline="black"`` (IG, occlusion) so the
    baseline is exactly a black image as the network would receive it.
    """
    h, w = pipeline.input_size
    return float(pipeline.to_tensor(np.zeros((h, w), np.float32)).flatten()[0])


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch tensor (1, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must have shape (1, C, H, W), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    with torch.inference_mode(False):
        return x.detach().clone().float()


def _default_layer(model: nn.Module, probed_last: str | None) -> str:
    name = getattr(model, "target_layer", None)
    if isinstance(name, str) and name:
        return name
    if probed_last is None:
        raise ValueError("model has no spatial (4-D) layer for a CAM method; pass layer=")
    return probed_last


def _check_options(method: str, impl: Any, options: dict) -> None:
    valid = [
        p.name for p in inspect.signature(impl.compute).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method!r}; valid: {valid or 'none'}"
        )


def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: int | str,
    method: str = "gradcam",
    *,
    layer: str | None = None,
    labels: Sequence[str] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    clip_percentile: float = 99.5,
    **options: Any,
) -> Explanation:
    """Explain the ``target`` logit of ``model`` at ``x`` with ``method``.

    Args:
        model: Classifier returning logits (N, classes). Never modified.
        x: (1, C, H, W) float tensor as the network receives it (``PipelineResult.tensor``).
            Never modified.
        target: Class index, or a label name together with ``labels``.
        method: A key of :data:`METHODS`.
        layer: Dotted layer name for CAM methods (see module docstring for the default).
        labels: Class names in logit order (to pass ``target`` by name).
        memory_budget: Bytes allowed for batched passes (IG, SmoothGrad, occlusion).
        clip_percentile: Passed to :func:`medcnn.visualize.normalize_heatmap`.
        **options: Method options (see each class in :data:`METHODS`).

    Returns:
        :class:`Explanation` with heatmap/attribution float32 (H, W).

    Raises:
        ValueError: unknown method, bad target, bad shape, unknown layer or option value.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    impl = METHODS[method]()
    _check_options(method, impl, options)
    t0 = time.perf_counter()
    xc = _check_input(x)
    with torch.inference_mode(False), torch.enable_grad():
        iso = isolated_copy(model)
        pr = probe(model, iso, xc)
        tgt = resolve_target(target, labels, pr.num_outputs)
        lay = (layer or _default_layer(model, pr.last_spatial_layer)) if impl.needs_layer else None
        net = iso if impl.needs_layer else fast_copy(model, iso, xc)
        ctx = Context(net, xc.requires_grad_(impl.needs_layer), tgt, lay, pr, int(memory_budget))
        signed, shown, params = impl.compute(ctx, **options)
    attribution = signed.detach().cpu().numpy().astype(np.float32)
    heat = normalize_heatmap(shown.detach().cpu().numpy(), signed=True, clip_percentile=clip_percentile)
    # empty_map: no positive evidence anywhere (e.g. Grad-CAM of a class the model rejects).
    params = {**params, "clip_percentile": clip_percentile, "empty_map": bool(heat.max() == 0.0)}
    return Explanation(
        heatmap=heat,
        attribution=attribution,
        method=method,
        params=params,
        seconds=time.perf_counter() - t0,
        delta=params.get("delta"),
        target=tgt,
    )
