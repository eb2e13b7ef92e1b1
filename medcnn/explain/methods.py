"""The attribution methods and their registry :data:`METHODS` (name -> class).

Each method is a small :class:`~medcnn.explain.base.AttributionMethod`: declarations as
class attributes and one ``attribute`` hook returning the signed map;
:func:`medcnn.explain.explain` owns the rest of the pipeline. ``attribute`` receives the
isolated copy of the model, never the caller's, so any hook Captum registers dies with
the copy.

Every method explains the same objective (:mod:`medcnn.explain.objective`): by default
the score that sets the displayed probability, i.e. the logit difference
``z_target - z_other`` of a binary softmax head (the class logit of a sigmoid
multi-label head); ``objective="logit"`` gives the raw single-logit map. Methods call
Captum on ``ctx.model`` (the objective head) with ``target=ctx.target`` and resolve
layers in ``ctx.network``.

torch, Captum and the integrators are imported inside ``attribute``: importing this
module (and so :data:`METHODS`, which feeds the command line's ``--method`` choices and
the app's drop-down) costs no torch import.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medcnn.explain.base import AttributionMethod, Context, Display, SignedMap, check_declaration

if TYPE_CHECKING:
    import torch

__all__ = ["INTERACTIVE_STEPS", "METHODS", "GradCAMMethod", "GuidedGradCAMMethod", "IntegratedGradientsMethod",
           "SmoothGradMethod", "OcclusionMethod"]

#: Gauss-Legendre nodes of the default Integrated Gradients rule (Captum's default ``n_steps``).
INTERACTIVE_STEPS = 50


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (H, W) float, summed over channels."""
    return t.detach().sum(dim=(0, 1)).float()


class GradCAMMethod(AttributionMethod):
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) with Captum ``LayerGradCam``.

    ``alpha_k = mean_ij d y / d A_kij`` (``y`` = the objective); signed map ``sum_k alpha_k A_k`` at the
    layer's resolution. The heat map is its positive part (the paper's ReLU), taken
    before bilinear upsampling to the input size, as Captum and pytorch-grad-cam do.
    """

    name = "gradcam"
    label = "Grad-CAM"
    description = ("Class activation map of a late convolutional layer weighted by the "
                   "mean gradient of the score that sets the class probability. "
                   "Coarse (layer resolution), fast.")
    needs_layer = True
    passes_randomisation_check = True
    display = Display.POSITIVE

    def attribute(self, ctx: Context) -> SignedMap:
        """Signed layer map (h_layer, w_layer) before the ReLU."""
        from captum.attr import LayerGradCam

        from medcnn.explain.isolate import resolve_layer

        layer = resolve_layer(ctx.network, ctx.layer)
        cam = LayerGradCam(ctx.model, layer).attribute(ctx.x, target=ctx.target, relu_attributions=False)
        return SignedMap(cam.detach()[0, 0].float(),
                         {"layer": ctx.layer, "layer_map_size": list(cam.shape[-2:])})


class GuidedGradCAMMethod(AttributionMethod):
    """Guided Grad-CAM: guided backprop x upsampled Grad-CAM (Captum ``GuidedGradCam``).

    Fails the model-randomisation sanity check: guided backprop is largely independent of
    the upper layers' weights and behaves like an edge detector (Adebayo et al. 2018,
    "Sanity Checks for Saliency Maps", NeurIPS). Shown for comparison only.
    """

    name = "guided_gradcam"
    label = "Guided Grad-CAM (fails sanity check)"
    description = ("Fine-grained product of guided backpropagation and Grad-CAM. Known to "
                   "look similar for trained and random weights (Adebayo et al. 2018).")
    needs_layer = True
    passes_randomisation_check = False
    display = Display.MAGNITUDE

    def attribute(self, ctx: Context) -> SignedMap:
        """Signed (H, W) product map, summed over input channels."""
        from captum.attr import GuidedGradCam

        from medcnn.explain.isolate import resolve_layer

        layer = resolve_layer(ctx.network, ctx.layer)
        a = GuidedGradCam(ctx.model, layer).attribute(ctx.x, target=ctx.target)
        return SignedMap(_channel_sum(a), {"layer": ctx.layer})


class IntegratedGradientsMethod(AttributionMethod):
    """Integrated Gradients with adaptive Gauss-Legendre quadrature (:mod:`medcnn.explain.ig`).

    The baseline defaults to a black image as the network receives it: the normalised
    value of display 0 from the caller's pipeline (``explain(..., pipeline=...)``), else
    the darkest pixel of the input (see :func:`medcnn.explain.ig.make_baseline`).
    """

    name = "integrated_gradients"
    label = "Integrated Gradients"
    description = ("Path integral of gradients from a baseline image to the input; "
                   "attributions add up to score(x) - score(baseline) (completeness).")
    needs_layer = False
    passes_randomisation_check = True
    display = Display.SMOOTHED_MAGNITUDE

    def attribute(self, ctx: Context, *, baseline: Any = "black", baseline_value: float | None = None,
                  sigma: float | None = None, tol: float = 0.01, max_steps: int = 256,
                  n_steps: int | None = INTERACTIVE_STEPS, nodes: int = 4, init_panels: int = 4) -> SignedMap:
        """Signed (H, W) IG map.

        By default a fixed ``n_steps = 50``-node Gauss-Legendre rule: the rule of Captum's default
        call, so the map has the same quadrature error against a fine reference (ours is faster per
        gradient: BatchNorm folded into the convolutions, channels-last weights, bounded batches).
        The adaptive rule (``n_steps=None``) stops on the completeness delta, which on trained ReLU
        networks can be met by cancellation while the map is still off; it measured about twice
        Captum's map error at its default tolerance (BENCHMARKS.md, section 2), so it is opt-in.

        Args:
            ctx: The call's context.
            baseline: ``"black"``, ``"blur"``, ``"mean"``, a float or a tensor
                (:func:`medcnn.explain.ig.make_baseline`).
            baseline_value: Overrides the value of a ``"black"`` or ``"mean"`` baseline.
            sigma: Blur standard deviation in pixels (``"blur"``).
            tol: Completeness tolerance relative to ``|f(x) - f(baseline)|``.
            max_steps: Most gradient evaluations.
            n_steps: Fixed Gauss-Legendre rule with this many nodes (no refinement); ``None``:
                the adaptive rule (``tol``, ``max_steps``, ``nodes``, ``init_panels``).
            nodes: Nodes per panel. init_panels: Panels before refinement.
        """
        from medcnn.explain.ig import adaptive_ig, make_baseline
        from medcnn.explain.isolate import batch_size

        b, bparams = make_baseline(ctx.x, baseline, baseline_value=baseline_value, black=ctx.black,
                                   sigma=sigma)
        bs = batch_size(ctx.probe.bytes_per_sample, ctx.budget, 256, ctx.x.device)
        attr, info = adaptive_ig(ctx.score, ctx.x, b, batch=bs, tol=tol, nodes=nodes,
                                 init_panels=init_panels, max_steps=max_steps, n_steps=n_steps)
        notes = () if info["converged"] or n_steps is not None else (
            f"Integrated Gradients did not reach tol={tol} within max_steps={max_steps} "
            f"(|delta|/|f(x)-f(b)| = {info['rel_delta']:.3g}); raise max_steps",)
        params = {**bparams, **info, "internal_batch_size": bs, "quadrature": "gausslegendre"}
        return SignedMap(_channel_sum(attr), params, notes)


class SmoothGradMethod(AttributionMethod):
    """SmoothGrad (Smilkov et al. 2017, eq. 3): mean gradient over noisy copies of x.

    Implemented directly rather than with Captum's ``NoiseTunnel`` because NoiseTunnel
    draws noise from torch's *global* RNG: results would depend on other threads and
    explaining would change the caller's random state. Here noise comes from a private
    ``torch.Generator`` seeded by ``seed``. The base attribution is the plain gradient
    (Captum ``Saliency`` with ``abs=False``).
    """

    name = "smoothgrad"
    label = "SmoothGrad"
    description = "Gradient averaged over noisy copies of the image; sharp but noisy."
    needs_layer = False
    passes_randomisation_check = True
    display = Display.SMOOTHED_MAGNITUDE

    def attribute(self, ctx: Context, *, n_samples: int = 25, noise_level: float = 0.15,
                  seed: int = 0) -> SignedMap:
        """Signed (H, W) mean gradient.

        Args:
            ctx: The call's context.
            n_samples: Noisy copies (>= 1).
            noise_level: Noise standard deviation as a fraction of the input's value range
                (the paper uses 10-20 %).
            seed: Seed of the private generator.

        Raises:
            ValueError: ``n_samples < 1`` or ``noise_level < 0``.
        """
        import torch

        from medcnn.explain.isolate import batch_size

        if n_samples < 1 or noise_level < 0:
            raise ValueError(f"n_samples must be >= 1 and noise_level >= 0, got {n_samples}, {noise_level}")
        sigma = noise_level * float(ctx.x.max() - ctx.x.min())
        gen = torch.Generator(device=ctx.x.device).manual_seed(int(seed))
        bs = batch_size(ctx.probe.bytes_per_sample, ctx.budget, n_samples, ctx.x.device)
        total = torch.zeros_like(ctx.x)
        for i in range(0, n_samples, bs):
            n = min(bs, n_samples - i)
            noise = torch.randn((n, *ctx.x.shape[1:]), generator=gen, device=ctx.x.device)
            inp = (ctx.x + sigma * noise).requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.score(inp).sum(), inp)
            total += g.sum(0, keepdim=True)
        return SignedMap(_channel_sum(total / n_samples),
                         {"n_samples": n_samples, "noise_sigma": sigma, "seed": seed,
                          "base": "saliency", "batch_size": bs})


class OcclusionMethod(AttributionMethod):
    """Occlusion (Zeiler & Fergus 2014) with Captum ``Occlusion``, batched.

    A ``window`` x ``window`` patch (default H/8) slides with ``stride`` (default
    ``window``; ``window // 2`` gives smoother maps at four times the passes) and is
    replaced by the baseline (default "black", as for IG); the attribution of a pixel is
    the mean drop of the objective over the patches covering it. Positive = hiding it
    lowers the class's score. ``perturbations_per_eval`` is chosen from the memory budget.
    """

    name = "occlusion"
    label = "Occlusion"
    description = "Score drop when each image patch is hidden; model-agnostic, slow."
    needs_layer = False
    passes_randomisation_check = True
    display = Display.POSITIVE

    def attribute(self, ctx: Context, *, window: int | None = None, stride: int | None = None,
                  baseline: Any = "black", baseline_value: float | None = None,
                  sigma: float | None = None) -> SignedMap:
        """Signed (H, W) mean objective drop.

        Args:
            ctx: The call's context.
            window: Patch side in pixels (default ``min(H, W) // 8``, at least 2).
            stride: Patch step in pixels (default ``window``).
            baseline, baseline_value, sigma: As for Integrated Gradients.

        Raises:
            ValueError: window outside [1, min(H, W)] or stride < 1.
        """
        import torch
        from captum.attr import Occlusion

        from medcnn.explain.ig import make_baseline
        from medcnn.explain.isolate import batch_size

        h, w = ctx.x.shape[-2:]
        win = int(window or max(2, min(h, w) // 8))
        st = int(stride or win)
        if not 1 <= win <= min(h, w) or st < 1:
            raise ValueError(f"window must be in [1, {min(h, w)}] and stride >= 1, got {win}, {st}")
        b, bparams = make_baseline(ctx.x, baseline, baseline_value=baseline_value, black=ctx.black,
                                   sigma=sigma)
        n = ((h - win) // st + 1) * ((w - win) // st + 1)
        ppe = batch_size(ctx.probe.forward_bytes_per_sample * 2, ctx.budget, n)
        c = ctx.x.shape[1]
        with torch.no_grad():
            a = Occlusion(ctx.model).attribute(
                ctx.x, sliding_window_shapes=(c, win, win), strides=(c, st, st),
                baselines=b, target=ctx.target, perturbations_per_eval=ppe,
            )
        return SignedMap(_channel_sum(a), {**bparams, "window": win, "stride": st,
                                           "perturbations": n, "perturbations_per_eval": ppe})


def _registry(*classes: type) -> dict[str, type[AttributionMethod]]:
    """Name -> class, after checking each declaration and that names are unique."""
    out: dict[str, type[AttributionMethod]] = {}
    for cls in classes:
        check_declaration(cls)
        if cls.name in out:
            raise TypeError(f"method name {cls.name!r} is declared by {out[cls.name].__name__} "
                            f"and {cls.__name__}")
        out[cls.name] = cls
    return out


#: Method name -> :class:`~medcnn.explain.base.AttributionMethod` subclass, in menu order.
#: Feeds the app's drop-down and the command line's ``--method`` choices. Every method
#: explains the objective of :mod:`medcnn.explain.objective` (default: the logit difference
#: that sets a softmax head's probability; ``objective="logit"``: the single logit).
METHODS: dict[str, type[AttributionMethod]] = _registry(
    GradCAMMethod,
    IntegratedGradientsMethod,
    SmoothGradMethod,
    OcclusionMethod,
    GuidedGradCAMMethod,
)
