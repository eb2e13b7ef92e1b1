"""Attribution method classes behind :func:`medcnn.explain.explain`.

Each method is a small class: UI metadata as class attributes and one ``compute``
hook. The base class (in :mod:`medcnn.explain`) owns the pipeline: input copy, isolated
model copy, target check, timing, normalisation. ``compute`` receives the isolated copy,
never the caller's model, so any hook Captum registers dies with the copy.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import GuidedGradCam, LayerGradCam, Occlusion
from torch import nn

from medcnn.explain.isolate import Probe, batch_size, resolve_layer
from medcnn.explain.ig import adaptive_ig, make_baseline

__all__ = ["Context", "GradCAMMethod", "IntegratedGradientsMethod", "SmoothGradMethod",
           "OcclusionMethod", "GuidedGradCAMMethod"]


class Context:
    """Everything a method needs for one call.

    Attributes:
        model: The isolated copy (eval mode, hook-safe); for methods that hook no layer,
            its BN-folded fast copy (``_isolate.fast_copy``), which must not be hooked.
        x: (1, C, H, W) private copy of the input.
        target: Class index.
        layer: Dotted layer name (for CAM methods) or None.
        probe: :class:`Probe` of the model at this input size.
        budget: Memory budget in bytes.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, target: int, layer: str | None,
                 probe: Probe, budget: int):
        self.model, self.x, self.target, self.layer = model, x, target, layer
        self.probe, self.budget = probe, budget

    def logit(self, inp: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N,) target logits."""
        return self.model(inp)[:, self.target]


def _to_map(t: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (H, W) summed over channels."""
    return t.detach().sum(dim=(0, 1)).float()


def _upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)


class GradCAMMethod:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) with Captum ``LayerGradCam``.

    ``alpha_k = mean_ij d logit / d A_kij``; map = ``ReLU(sum_k alpha_k A_k)`` on the
    layer, bilinearly upsampled to the input size (ReLU before upsampling, as Captum and
    pytorch-grad-cam do). ``attribution`` is the signed map before ReLU, upsampled.
    """

    label = "Grad-CAM"
    passes_randomisation_check = True
    needs_layer = True
    signed = True  # heat map shows positive evidence only
    description = ("Class activation map of a late convolutional layer weighted by the "
                   "mean gradient of the class logit. Coarse (layer resolution), fast.")

    def compute(self, ctx: Context, **_: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
        layer = resolve_layer(ctx.model, ctx.layer)
        cam = LayerGradCam(ctx.model, layer).attribute(
            ctx.x, target=ctx.target, relu_attributions=False
        )
        size = tuple(ctx.x.shape[-2:])
        signed = _upsample(cam.detach(), size)[0, 0]
        shown = _upsample(torch.relu(cam.detach()), size)[0, 0]
        return signed, shown, {"layer": ctx.layer, "layer_map_size": list(cam.shape[-2:])}


class GuidedGradCAMMethod:
    """Guided Grad-CAM: guided backprop x upsampled Grad-CAM (Captum ``GuidedGradCam``).

    Fails the model-randomisation sanity check: guided backprop is largely independent of
    the upper layers' weights and behaves like an edge detector (Adebayo et al. 2018,
    "Sanity Checks for Saliency Maps", NeurIPS). Shown for comparison only.
    """

    label = "Guided Grad-CAM (fails sanity check)"
    passes_randomisation_check = False
    needs_layer = True
    signed = False
    description = ("Fine-grained product of guided backpropagation and Grad-CAM. Known to "
                   "look similar for trained and random weights (Adebayo et al. 2018).")

    def compute(self, ctx: Context, **_: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
        layer = resolve_layer(ctx.model, ctx.layer)
        a = GuidedGradCam(ctx.model, layer).attribute(ctx.x, target=ctx.target)
        m = _to_map(a)
        return m, m.abs(), {"layer": ctx.layer}


class IntegratedGradientsMethod:
    """Integrated Gradients with adaptive Gauss-Legendre quadrature (see ``_attribution.ig``).

    Options: ``baseline`` ("black" | "blur" | "mean" | float | tensor), ``baseline_value``,
    ``sigma`` (blur), ``tol`` (0.01), ``max_steps`` (256), ``n_steps`` (fixed rule),
    ``nodes`` (4 per panel), ``init_panels`` (4).
    """

    label = "Integrated Gradients"
    passes_randomisation_check = True
    needs_layer = False
    signed = False  # heat map shows magnitude
    description = ("Path integral of gradients from a baseline image to the input; "
                   "attributions add up to logit(x) - logit(baseline) (completeness).")

    def compute(self, ctx: Context, *, baseline: Any = "black", baseline_value: float | None = None,
                sigma: float | None = None, tol: float = 0.01, max_steps: int = 256,
                n_steps: int | None = None, nodes: int = 4, init_panels: int = 4,
                **_: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
        b, bparams = make_baseline(ctx.x, baseline, baseline_value=baseline_value, sigma=sigma)
        bs = batch_size(ctx.probe.bytes_per_sample, ctx.budget, 256, ctx.x.device)
        attr, info = adaptive_ig(ctx.logit, ctx.x, b, batch=bs, tol=tol, nodes=nodes,
                                 init_panels=init_panels, max_steps=max_steps, n_steps=n_steps)
        m = _to_map(attr)
        return m, m.abs(), {**bparams, **info, "internal_batch_size": bs, "quadrature": "gausslegendre"}


class SmoothGradMethod:
    """SmoothGrad (Smilkov et al. 2017, eq. 3): mean gradient over noisy copies of x.

    Implemented directly rather than with Captum's ``NoiseTunnel`` because NoiseTunnel
    draws noise from torch's *global* RNG: results would depend on other threads and
    explaining would change the caller's random state. Here noise comes from a private
    ``torch.Generator`` seeded by ``seed``. The base attribution is the plain gradient
    (Captum ``Saliency`` with ``abs=False``); the heat map shows its magnitude.
    Options: ``n_samples`` (25), ``noise_level`` (0.15 x the input's value range, as in
    the paper's 10-20 %), ``seed`` (0).
    """

    label = "SmoothGrad"
    passes_randomisation_check = True
    needs_layer = False
    signed = False
    description = "Gradient averaged over noisy copies of the image; sharp but noisy."

    def compute(self, ctx: Context, *, n_samples: int = 25, noise_level: float = 0.15,
                seed: int = 0, **_: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
        if n_samples < 1 or noise_level < 0:
            raise ValueError("n_samples must be >= 1 and noise_level >= 0")
        sigma = noise_level * float(ctx.x.max() - ctx.x.min())
        gen = torch.Generator(device=ctx.x.device).manual_seed(int(seed))
        bs = batch_size(ctx.probe.bytes_per_sample, ctx.budget, n_samples, ctx.x.device)
        total = torch.zeros_like(ctx.x)
        for i in range(0, n_samples, bs):
            n = min(bs, n_samples - i)
            noise = torch.randn((n, *ctx.x.shape[1:]), generator=gen, device=ctx.x.device)
            inp = (ctx.x + sigma * noise).requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.logit(inp).sum(), inp)
            total += g.sum(0, keepdim=True)
        m = _to_map(total / n_samples)
        return m, m.abs(), {"n_samples": n_samples, "noise_sigma": sigma, "seed": seed,
                            "base": "saliency", "batch_size": bs}


class OcclusionMethod:
    """Occlusion (Zeiler & Fergus 2014) with Captum ``Occlusion``, batched.

    A ``window`` x ``window`` patch (default H/8) slides with ``stride`` (default
    ``window``: 64 forward passes; ``window // 2`` gives smoother maps at 4x the cost) and is replaced by the baseline (default "black"); the attribution of a
    pixel is the mean logit drop over the patches covering it. Positive = hiding it
    lowers the class logit; the heat map shows positive evidence only.
    ``perturbations_per_eval`` is chosen from the memory budget.
    """

    label = "Occlusion"
    passes_randomisation_check = True
    needs_layer = False
    signed = True
    description = "Logit drop when each image patch is hidden; model-agnostic, slow."

    def compute(self, ctx: Context, *, window: int | None = None, stride: int | None = None,
                baseline: Any = "black", baseline_value: float | None = None,
                sigma: float | None = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
        h, w = ctx.x.shape[-2:]
        win = int(window or max(2, min(h, w) // 8))
        st = int(stride or win)
        if not 1 <= win <= min(h, w) or st < 1:
            raise ValueError(f"window must be in [1, {min(h, w)}] and stride >= 1, got {win}, {st}")
        b, bparams = make_baseline(ctx.x, baseline, baseline_value=baseline_value, sigma=sigma)
        n = ((h - win) // st + 1) * ((w - win) // st + 1)
        ppe = batch_size(ctx.probe.forward_bytes_per_sample * 2, ctx.budget, n)
        c = ctx.x.shape[1]
        with torch.no_grad():
            a = Occlusion(ctx.model).attribute(
                ctx.x, sliding_window_shapes=(c, win, win), strides=(c, st, st),
                baselines=b, target=ctx.target, perturbations_per_eval=ppe,
            )
        m = _to_map(a)
        return m, torch.relu(m), {**bparams, "window": win, "stride": st,
                                  "perturbations": n, "perturbations_per_eval": ppe}
