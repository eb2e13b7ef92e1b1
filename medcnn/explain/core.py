"""Saliency maps behind one signature: ``explain(model, x, target, method, **options)``.

Conventions (the same for every method)
---------------------------------------
* Maps explain the **objective** (:mod:`medcnn.explain.objective`): by default the score
  that sets the displayed probability, i.e. for a softmax head the target logit minus the
  other logit (``"difference"``; the log-odds for more than two classes), for a sigmoid
  head the class logit: the caller passes the model's :class:`~medcnn.models.head.Head`
  (``head=card.head_rule``), which says which. ``objective="logit"`` gives
  the raw single-logit map. ``Explanation.objective`` and ``params["objective"]`` (e.g.
  ``"logit difference (PNEUMONIA - NORMAL)"``) say which was explained. Never the
  calibrated probability itself (it saturates).
* ``Explanation.attribution``: float32 (H, W), signed, raw units (objective), summed over
  input channels: the method's :class:`~medcnn.explain.base.SignedMap`, bilinearly
  upsampled to the input size when it is coarser (Grad-CAM's layer map, before ReLU).
* ``Explanation.heatmap``: float32 (H, W) at the model input size, in [0, 1], 1 = most
  important. The method's declared :class:`~medcnn.explain.base.Display` picks the part
  shown (positive part or absolute value), taken at the method's own resolution and then
  upsampled (Grad-CAM: ReLU before upsampling, Selvaraju et al. 2017, eq. 2); a pixel-level
  method (IG, SmoothGrad) declares it smoothed with a Gaussian of sigma = a quarter of one cell of
  the network's last feature map (``params["display_smoothing"]`` says so), and
  :func:`medcnn.explain.normalize.normalize_heatmap` scales it: the sign convention and the
  scaling live there and nowhere else.

Safety on a shared model
------------------------
Every call works on a private copy of ``x`` and on an isolated copy of the model
(:func:`medcnn.explain.isolate.isolated_copy`: shallow module copies sharing weight
storage). Captum's hooks are registered on the copy only, so the caller's model never
carries a hook, its ``training`` flag and ``requires_grad`` flags are untouched
(explanations always run in eval mode), and concurrent threads cannot see each other's
hooks: results are identical to sequential runs without any lock. Random methods use
private generators. Methods that hook no layer (IG, SmoothGrad, occlusion) run on a
cached, BatchNorm-folded, channels-last deep copy (:func:`medcnn.explain.isolate.fast_copy`)
that nothing ever hooks.

Baselines
---------
A ``"black"`` baseline (the default of IG and occlusion) is a black image as the network
receives it. Pass the image's preprocessing ``pipeline=`` and it is exactly that
(:func:`black_value`); without a pipeline it falls back to the darkest pixel of ``x``
(``params["black_from"]`` says which was used).

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
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medcnn.explain.base import AttributionMethod, Context, Display
from medcnn.explain.isolate import DEFAULT_MEMORY_BUDGET, fast_copy, isolated_copy, probe
from medcnn.explain.methods import METHODS
from medcnn.explain.normalize import evidence, normalize_heatmap, smooth
from medcnn.explain.objective import ObjectiveHead, describe_objective, resolve_objective

if TYPE_CHECKING:
    from medcnn.models.head import Head
    from medcnn.preprocess import Pipeline

__all__ = ["Explanation", "explain", "METHODS", "resolve_target", "black_value", "DEFAULT_MEMORY_BUDGET"]


@dataclass
class Explanation:
    """Result of :func:`explain`.

    Attributes:
        heatmap: float32 (H, W) in [0, 1], 1 = most important.
        attribution: float32 (H, W) signed raw attribution (see module docstring).
        method: Registry name.
        params: Parameters actually used (layer, baseline, steps, ...), plus ``objective``
            (what was explained, e.g. ``"logit difference (PNEUMONIA - NORMAL)"``),
            ``display`` (the declared :class:`~medcnn.explain.base.Display` value),
            ``clip_percentile`` and ``empty_map``.
        seconds: Wall time of the call.
        delta: Convergence delta ``sum(attr) - (f(x) - f(baseline))`` for path methods
            (``f`` = the objective).
        target: Explained class index.
        objective: ``"difference"`` or ``"logit"`` (:mod:`medcnn.explain.objective`).
        probability: Calibrated probability of the target shown next to the map, once
            :func:`medcnn.explain.at_operating_point` attached it (else None).
        operating_point: Probability of the target at which the model calls it (None
            when not attached or not defined).
        called: Whether the model calls the target on this image (None: not attached).
        notice: One sentence for the page next to the map when it could mislead (target
            not called, or an empty map); None when there is nothing to say.
    """

    heatmap: np.ndarray
    attribution: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    delta: float | None = None
    target: int = 0
    objective: str = "difference"
    probability: float | None = None
    operating_point: float | None = None
    called: bool | None = None
    notice: str | None = None

    @property
    def empty(self) -> bool:
        """True when the map shows nothing (no evidence for the target anywhere)."""
        return bool(self.params.get("empty_map", float(np.max(self.heatmap)) == 0.0))

    @property
    def below_operating_point(self) -> bool | None:
        """True when the model does not call the target (None: no probability attached)."""
        return None if self.called is None else not self.called


def resolve_target(target: int | str, labels: Sequence[str] | None, num_outputs: int) -> int:
    """Class index from an int or a label name (``labels`` in logit order).

    Args:
        target: Class index or label name.
        labels: Class names in logit order (needed for a name).
        num_outputs: Number of logits of the model.

    Returns:
        The class index.

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


def black_value(pipeline: Pipeline) -> float:
    """Normalised tensor value of display value 0 (a black pixel) for a pipeline.

    This is the default of every ``"black"`` baseline when ``explain`` gets
    ``pipeline=``; passing the result as ``baseline_value`` gives the same baseline.

    Args:
        pipeline: The :class:`medcnn.preprocess.Pipeline` that produced the input.

    Returns:
        The value a black display pixel has in the network's input tensor.
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


def _method(name: str) -> AttributionMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]()


def _check_options(method: str, impl: AttributionMethod, options: dict[str, Any]) -> None:
    valid = [
        p.name for p in inspect.signature(impl.attribute).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method!r}; valid: {valid or 'none'}"
        )


def _to_input_size(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map -> float32 (H, W) array, bilinearly upsampled if coarser."""
    m = m.detach().float()
    if tuple(m.shape) != tuple(size):
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return m.cpu().numpy().astype(np.float32)


def _heatmap(signed: torch.Tensor, display: Display, size: tuple[int, int],
             clip_percentile: float | None, sigma: float = 0.0) -> np.ndarray:
    """The declared part of the signed map at its own resolution, upsampled, smoothed (a
    ``SMOOTHED_MAGNITUDE`` display, Gaussian ``sigma`` px), normalised."""
    positive = display.keeps_positive_part
    shown = torch.from_numpy(evidence(signed.detach().cpu().numpy(), signed=positive))
    shown = _to_input_size(shown, size)
    if display.smooths:
        shown = smooth(shown, sigma)
    return normalize_heatmap(shown, signed=positive, clip_percentile=clip_percentile)


def _feature_cell(net: nn.Module, layer: str | None, x: torch.Tensor) -> int:
    """Input pixels per cell of ``layer``'s output (the network's last spatial feature map): the
    finest scale the network's decision resolves. One forward pass with a hook on ``net`` (the
    isolated copy); 1 when there is no spatial layer."""
    if not layer:
        return 1
    seen: list[int] = []
    hook = net.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(int(o.shape[-2])))
    try:
        with torch.no_grad():
            net(x.detach())
    finally:
        hook.remove()
    return max(1, round(int(x.shape[-2]) / seen[0])) if seen and seen[0] else 1


def explain(
    model: nn.Module,
    x: torch.Tensor,
    target: int | str,
    method: str = "gradcam",
    *,
    layer: str | None = None,
    labels: Sequence[str] | None = None,
    pipeline: Pipeline | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    clip_percentile: float | None = 99.5,
    objective: str = "auto",
    head: Head | None = None,
    **options: Any,
) -> Explanation:
    """Explain the ``target`` class of ``model`` at ``x`` with ``method``.

    What is explained is the ``objective`` (:mod:`medcnn.explain.objective`): by default
    the score that sets the displayed probability (the logit difference of a softmax
    head), so an empty map means no region raises that probability.

    Args:
        model: Classifier returning logits (N, classes). Never modified.
        x: (1, C, H, W) float tensor as the network receives it (``PipelineResult.tensor``).
            Never modified.
        target: Class index, or a label name together with ``labels``.
        method: A key of :data:`METHODS`.
        layer: Dotted layer name for methods that need one (see module docstring for the
            default); ignored by the others.
        labels: Class names in logit order (to pass ``target`` by name).
        pipeline: The :class:`medcnn.preprocess.Pipeline` that produced ``x``. Makes the
            default ``"black"`` baseline (IG, occlusion) exactly a black image
            (:func:`black_value`); without it the darkest pixel of ``x`` is used.
        memory_budget: Bytes allowed for batched passes (IG, SmoothGrad, occlusion).
        clip_percentile: Passed to :func:`medcnn.explain.normalize.normalize_heatmap`.
        objective: ``"auto"`` (default: what ``head`` says, :attr:`Head.objective`: the
            logit difference of a softmax head, the class logit of a sigmoid head),
            ``"difference"`` or ``"logit"`` (the raw single-logit map).
        head: The model's decision rule (``card.head_rule``). Every medcnn caller passes it;
            without it a network is explained as a softmax classifier, and ``labels`` default
            to the head's.
        **options: Method options: the keyword-only parameters of the method's
            ``attribute`` (see each class in :data:`METHODS`).

    Returns:
        :class:`Explanation` with heatmap/attribution float32 (H, W).

    Raises:
        ValueError: unknown method, bad target, bad shape, unknown layer, objective or
            option value.

    Warns:
        UserWarning: soft problems reported by the method (IG short of its tolerance),
            attributed to the caller of ``explain``.
    """
    impl = _method(method)
    _check_options(method, impl, options)
    t0 = time.perf_counter()
    xc = _check_input(x)
    black = black_value(pipeline) if pipeline is not None else None
    with torch.inference_mode(False), torch.enable_grad():
        iso = isolated_copy(model)
        pr = probe(model, iso, xc)
        labels = labels if labels is not None or head is None else head.labels
        tgt = resolve_target(target, labels, pr.num_outputs)
        kind = resolve_objective(objective, head, pr.num_outputs)
        lay = (layer or _default_layer(model, pr.last_spatial_layer)) if impl.needs_layer else None
        net = iso if impl.needs_layer else fast_copy(model, iso, xc)
        ctx = Context(ObjectiveHead(net, kind), xc.requires_grad_(impl.needs_layer), tgt, lay, pr,
                      int(memory_budget), black, network=net)
        result = impl.attribute(ctx, **options)
        cell = _feature_cell(iso, pr.last_spatial_layer, xc) if impl.display.smooths else 0
    sigma = cell / 4 if cell > 1 else 0.0  # a network that resolves single pixels: nothing to smooth
    size = (int(xc.shape[-2]), int(xc.shape[-1]))
    heat = _heatmap(result.values, impl.display, size, clip_percentile, sigma=sigma)
    for message in result.warnings:
        warnings.warn(message, UserWarning, stacklevel=2)
    # empty_map: nothing to show (e.g. Grad-CAM of a class the model rejects).
    params = {**result.params, "objective": describe_objective(kind, tgt, pr.num_outputs, labels),
              "display": impl.display.value, "clip_percentile": clip_percentile,
              "empty_map": bool(heat.max() == 0.0)}
    if sigma:  # said in the caption and the report: the map shown is not per pixel
        params["display_smoothing"] = (f"Gaussian, sigma {sigma:g} px (a quarter of the network's {cell}-px "
                                       "feature cell); display only, the attribution is unchanged")
    return Explanation(
        heatmap=heat,
        attribution=_to_input_size(result.values, size),
        method=method,
        params=params,
        seconds=time.perf_counter() - t0,
        delta=params.get("delta"),
        target=tgt,
        objective=kind,
    )
