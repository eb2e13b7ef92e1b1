"""The contract every attribution method fulfils: declarations plus one hook.

A method is a subclass of :class:`AttributionMethod`. Its class attributes declare what the
app, the command line and :func:`medcnn.explain.explain` need to know about it (label,
description, whether it needs a layer, whether it passes the model-randomisation check,
how its signed map is displayed); its one abstract method, :meth:`AttributionMethod.attribute`,
returns the signed attribution map. Everything else (input copy, isolated model copy,
target check, the objective, upsampling to the input size, the one normalisation, timing,
warnings) is done once, in :func:`medcnn.explain.explain`.

What every method explains is the *objective* (:mod:`medcnn.explain.objective`): column
``ctx.target`` of ``ctx.model``, a head over the network whose columns are, by default,
the score that sets the displayed probability (target logit minus the other logit for a
binary softmax head; the class logit for a sigmoid multi-label head; the raw single logit
with ``objective="logit"``). A method never picks the score itself: it explains
``ctx.model``'s ``ctx.target`` column, so one definition holds for Grad-CAM, IG,
SmoothGrad, occlusion and guided Grad-CAM alike.

This module imports no torch, so the registry of names can feed ``--help`` cheaply.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    import torch
    from torch import nn

    from medcnn.explain.isolate import Probe

__all__ = ["AttributionMethod", "Context", "Display", "SignedMap", "DECLARATIONS", "check_declaration"]


class Display(str, enum.Enum):
    """How a signed attribution map becomes a heat map (1 = most important).

    * ``POSITIVE``: the positive part ``max(a, 0)``, evidence *for* the class (Grad-CAM's
      ReLU, Selvaraju et al. 2017, eq. 2; an occlusion patch whose removal lowers the logit).
    * ``MAGNITUDE``: the absolute value ``|a|``, evidence for or against the class both
      count (the usual display of gradient and path methods).
    * ``SMOOTHED_MAGNITUDE``: ``|a|`` smoothed with a Gaussian at the scale of one cell of the
      network's last feature map before scaling (:func:`medcnn.explain.normalize.smooth`). A
      per-pixel gradient or path map is a dot pattern over the whole image (air and table
      included) at the pixel scale, finer than anything the network resolves; the smoothed map
      shows where the attribution mass is. Display only: ``Explanation.attribution`` (and the
      completeness of IG) are unchanged.

    :func:`medcnn.explain.normalize.normalize_heatmap` implements the sign rule (``signed=True``
    is the positive part); :attr:`keeps_positive_part` is the argument to pass it, :attr:`smooths`
    says whether :func:`medcnn.explain.explain` smooths first.
    """

    POSITIVE = "positive part"
    MAGNITUDE = "absolute value"
    SMOOTHED_MAGNITUDE = "absolute value, smoothed at the network's feature-cell scale"

    @property
    def keeps_positive_part(self) -> bool:
        """The ``signed`` argument of :func:`medcnn.explain.normalize.normalize_heatmap`."""
        return self is Display.POSITIVE

    @property
    def smooths(self) -> bool:
        """Whether the shown part is smoothed (display only) before it is scaled."""
        return self is Display.SMOOTHED_MAGNITUDE


class Context:
    """Everything a method needs for one call (built by :func:`medcnn.explain.explain`).

    Attributes:
        model: The function explained: an :class:`~medcnn.explain.objective.ObjectiveHead`
            over ``network``, (N, C, H, W) -> (N, classes), whose column ``t`` is the
            objective of class ``t``. Pass it (with ``target``) to Captum.
        x: (1, C, H, W) private float32 copy of the input (``requires_grad`` set for
            methods that need a layer).
        target: Class index whose objective is explained.
        layer: Dotted layer name for methods that need one, else None; resolve it in
            ``network``.
        probe: :class:`medcnn.explain.isolate.Probe` of the model at this input size.
        budget: Memory budget in bytes for batched passes.
        black: Normalised tensor value of a black display pixel
            (:func:`medcnn.explain.black_value` of the caller's pipeline), or None when the
            caller passed no pipeline. The default of every ``"black"`` baseline.
        network: The isolated copy of the caller's model (eval mode, hook-safe) that
            ``model`` wraps; for methods with ``needs_layer = False`` its BN-folded fast
            copy, which must not be hooked. Defaults to ``model``.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, target: int, layer: str | None,
                 probe: Probe, budget: int, black: float | None = None, network: nn.Module | None = None):
        self.model, self.x, self.target, self.layer = model, x, target, layer
        self.probe, self.budget, self.black = probe, budget, black
        self.network = model if network is None else network

    def score(self, inp: torch.Tensor) -> torch.Tensor:
        """Target objective of a batch: (N, C, H, W) -> (N,)."""
        return self.model(inp)[:, self.target]


class SignedMap(NamedTuple):
    """What :meth:`AttributionMethod.attribute` returns.

    Attributes:
        values: float (h, w) signed attribution, summed over input channels, in units of
            the objective (logit units).
            (h, w) is the input size or, for a CAM method, the layer's resolution with the
            same aspect; :func:`medcnn.explain.explain` upsamples it bilinearly.
        params: Parameters actually used (layer, baseline, steps, ...), JSON-ready values.
        warnings: Soft problems (e.g. IG did not reach its tolerance); ``explain`` issues
            each as a ``UserWarning`` pointing at its caller.
    """

    values: torch.Tensor
    params: dict[str, Any]
    warnings: tuple[str, ...] = ()


#: Declared class attribute -> (required type, what it means).
DECLARATIONS: dict[str, tuple[type, str]] = {
    "name": (str, "registry key, e.g. 'gradcam' (used by --method and the app)"),
    "label": (str, "human-readable name shown in the app"),
    "description": (str, "one or two sentences shown under the method drop-down"),
    "needs_layer": (bool, "True if the method hooks a layer (CAM methods)"),
    "passes_randomisation_check": (bool, "result of the model-randomisation test of Adebayo et al. 2018"),
    "display": (Display, "how the signed map is displayed: Display.POSITIVE, MAGNITUDE or SMOOTHED_MAGNITUDE"),
}


class AttributionMethod(ABC):
    """Base class of every method of :data:`medcnn.explain.METHODS`.

    Subclasses set every attribute of :data:`DECLARATIONS` and implement
    :meth:`attribute`; its keyword-only parameters are the method's options (``explain``
    rejects any other keyword, listing these).

    Attributes:
        name: Registry key.
        label: Name shown in the app.
        description: Short explanation shown in the app.
        needs_layer: Whether the method hooks a layer (gets the isolated copy and a layer
            name; methods that do not get the faster BN-folded copy).
        passes_randomisation_check: Whether the map changes when the model's weights are
            randomised (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS).
        display: How the signed map becomes the heat map (:class:`Display`).
    """

    name: str
    label: str
    description: str
    needs_layer: bool
    passes_randomisation_check: bool
    display: Display

    @abstractmethod
    def attribute(self, ctx: Context, **options: Any) -> SignedMap:
        """Signed attribution map of ``ctx.target``'s objective at ``ctx.x``.

        Args:
            ctx: The call's :class:`Context`.
            **options: The method's keyword-only options.

        Returns:
            :class:`SignedMap` with a float (h, w) map at the input size or coarser.
        """


def check_declaration(cls: type) -> type[AttributionMethod]:
    """Check that ``cls`` is a concrete :class:`AttributionMethod` declaring every field.

    Returns:
        ``cls`` unchanged.

    Raises:
        TypeError: not a subclass, still abstract, or a field missing or of the wrong type
            (the message names the field and what it must be).
    """
    if not (isinstance(cls, type) and issubclass(cls, AttributionMethod)):
        raise TypeError(f"{cls!r} is not a subclass of AttributionMethod")
    if getattr(cls, "__abstractmethods__", None):
        raise TypeError(f"{cls.__name__} does not implement {sorted(cls.__abstractmethods__)}")
    for field, (kind, meaning) in DECLARATIONS.items():
        value = getattr(cls, field, None)
        if not isinstance(value, kind) or (kind is str and not value):
            raise TypeError(
                f"{cls.__name__}.{field} must be a {'non-empty ' if kind is str else ''}"
                f"{kind.__name__} ({meaning}), got {value!r}"
            )
    return cls
