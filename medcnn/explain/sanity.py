"""Sanity and faithfulness checks for saliency maps.

* :func:`randomisation_test`: cascading model-parameter randomisation (Adebayo et al.
  2018, "Sanity Checks for Saliency Maps", NeurIPS, sec. 3.1). Starting from the output
  layer, layers are re-initialised one after another on a *deep copy* of the model and
  the map is recomputed; a faithful method's map must change. Similarity is reported as
  Spearman rank correlation and SSIM (Wang et al. 2004, "Image quality assessment: from
  error visibility to structural similarity", IEEE TIP, eq. 13, Gaussian window
  sigma = 1.5, K1 = 0.01, K2 = 0.03, data range 1).
* :func:`deletion_insertion`: deletion and insertion curves (Petsiuk et al. 2018,
  "RISE", BMVC, sec. 4.1): the class probability as the most important pixels are
  removed from (deletion) or added to (insertion) the image. Lower deletion AUC and higher
  insertion AUC = more faithful. Compared with random maps.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from scipy import ndimage, stats
from torch import nn

from medcnn.explain.core import black_value, explain
from medcnn.explain.ig import make_baseline
from medcnn.explain.isolate import isolated_copy

if TYPE_CHECKING:
    from medcnn.preprocess import Pipeline

__all__ = ["randomisation_test", "deletion_insertion", "ssim", "rank_correlation", "default_layers"]


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004, eq. 13) with a Gaussian window."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two (H, W) arrays of equal shape, got {a.shape} and {b.shape}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, sigma, truncate=3.5, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a**2
    vb = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s.mean())


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (0.0 if either is constant)."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def default_layers(model: nn.Module) -> list[str]:
    """Blocks to randomise, output first: top-level children with parameters; a child that
    is a container (``nn.Sequential``) of more than two parameterised blocks is expanded
    one level (e.g. DenseNet ``features`` -> ``features.denseblock4``, ...)."""
    names: list[str] = []
    for name, child in model.named_children():
        kids = [(n, c) for n, c in child.named_children() if any(True for _ in c.parameters())]
        if isinstance(child, nn.Sequential) and len(kids) > 2:
            names += [f"{name}.{n}" for n, _ in kids]
        elif any(True for _ in child.parameters()):
            names.append(name)
    if not names:
        raise ValueError(f"{type(model).__name__} has no parameterised children to randomise")
    return names[::-1]


@torch.no_grad()
def _randomise(module: nn.Module, gen: torch.Generator) -> None:
    """Re-initialise in place: weights (dim > 1) ~ Kaiming normal (fan_in, ReLU gain);
    1-D parameters (biases, norm scales) randomly permuted (same values, no structure)."""
    for p in module.parameters():
        if p.dim() > 1:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        else:
            p.copy_(p.flatten()[torch.randperm(p.numel(), generator=gen)].view_as(p))


def randomisation_test(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    method: str = "gradcam",
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    threshold: float = 0.5,
    **explain_options: Any,
) -> dict[str, Any]:
    """Cascading model-randomisation test (Adebayo et al. 2018).

    Args:
        model: Trained model (not modified: randomisation happens on a deep copy).
        x: (1, C, H, W) input. target: class index. method: a :data:`METHODS` key.
        layers: Dotted names randomised cumulatively in this order (default:
            :func:`default_layers`, output side first).
        seed: Seed of the private generator used for re-initialisation.
        threshold: The method passes if ``|Spearman|`` between the original map and the
            map of the fully randomised model is below this value.
        **explain_options: Passed to :func:`medcnn.explain.explain` (e.g. ``layer=``,
            ``pipeline=`` for the default black baseline, method options).

    The test compares maps, so it needs a map to compare: when the original map is empty or
    constant (no region raises the objective), every randomised map is compared with a blank
    and the similarity figures mean nothing (two empty maps have SSIM 1 and no rank
    correlation). Such a result is *not testable*: ``testable`` False, ``passes`` None, no steps,
    and ``reason`` says why; no layer is randomised.

    Returns:
        dict with ``method``, ``testable``, ``reason`` (None when testable), ``steps`` (list of
        ``{"layer", "spearman", "ssim"}``, one per cumulative step), ``final_spearman``,
        ``final_ssim`` (None when not testable), ``passes`` (True / False, None when not
        testable), ``threshold``.

    Raises:
        ValueError: a name in ``layers`` is not a module of ``model``, or any error of
            :func:`medcnn.explain.explain`.
    """
    ref = explain(model, x, target, method, **explain_options).heatmap
    if float(np.ptp(ref)) == 0.0:  # empty or constant: nothing to compare a randomised map with
        what = "empty" if float(np.max(ref)) == 0.0 else "constant"
        return {"method": method, "testable": False, "passes": None, "steps": [], "final_spearman": None,
                "final_ssim": None, "threshold": threshold,
                "reason": f"the original map is {what}: no region raises the explained score, so there is "
                          "no pattern whose change under randomised weights could be measured"}
    work = copy.deepcopy(model)
    work.eval()
    names = list(layers) if layers is not None else default_layers(work)
    gen = torch.Generator().manual_seed(int(seed))
    steps = []
    for name in names:
        try:
            _randomise(work.get_submodule(name), gen)
        except AttributeError:
            raise ValueError(f"layer {name!r} not found in {type(model).__name__}") from None
        h = explain(work, x, target, method, **explain_options).heatmap
        steps.append({"layer": name, "spearman": rank_correlation(ref, h), "ssim": ssim(ref, h)})
    final = steps[-1]
    return {
        "method": method,
        "testable": True,
        "reason": None,
        "steps": steps,
        "final_spearman": final["spearman"],
        "final_ssim": final["ssim"],
        "threshold": threshold,
        "passes": bool(abs(final["spearman"]) < threshold),
    }


def _curve_auc(scores: np.ndarray) -> float:
    return float(np.trapezoid(scores, dx=1.0 / (len(scores) - 1)))


@torch.no_grad()
def _curves(model: nn.Module, x: torch.Tensor, base: torch.Tensor, order: np.ndarray, target: int,
            steps: int, batch: int, score: str) -> tuple[np.ndarray, np.ndarray]:
    h, w = x.shape[-2:]
    n = h * w
    counts = np.round(np.linspace(0, n, steps + 1)).astype(int)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rank_t = torch.from_numpy(rank).view(1, 1, h, w).to(x.device)
    out = {}
    for kind, start, end in (("deletion", x, base), ("insertion", base, x)):
        vals = []
        for i in range(0, len(counts), batch):
            k = torch.from_numpy(counts[i : i + batch]).view(-1, 1, 1, 1).to(x.device)
            mask = rank_t < k  # pixels already moved from start to end
            y = model(torch.where(mask, end, start))
            vals.append(torch.softmax(y, 1)[:, target] if score == "prob" else y[:, target])
        out[kind] = torch.cat(vals).float().cpu().numpy()
    return out["deletion"], out["insertion"]


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    heatmap: np.ndarray,
    *,
    steps: int = 32,
    baseline: str = "blur",
    batch: int = 17,
    n_random: int = 3,
    seed: int = 0,
    score: str = "prob",
    pipeline: Pipeline | None = None,
    **baseline_options: Any,
) -> dict[str, Any]:
    """Deletion / insertion curves and AUCs (Petsiuk et al. 2018) for a map and random maps.

    Pixels are ranked by ``heatmap`` (ties broken by a seeded random jitter). Deletion
    replaces the top-k pixels of ``x`` by the baseline; insertion starts from the baseline
    and restores the top-k pixels of ``x``; k goes 0 -> H*W in ``steps`` steps.

    Args:
        model: Classifier (not modified; evaluated in eval mode on an isolated copy).
        x: (1, C, H, W) input. target: class index. heatmap: (H, W) map, 1 = most important.
        steps: Number of curve steps. baseline: ``"blur"`` or ``"black"`` (see
            :func:`medcnn.explain.ig.make_baseline`; ``baseline_value``/``sigma``
            accepted as keyword options). batch: Images per forward pass.
        n_random: Random maps averaged for the baseline AUCs. seed: Seed for ties/random maps.
        score: ``"prob"`` (softmax probability, as in the paper) or ``"logit"``.
        pipeline: The pipeline that produced ``x``: makes ``"black"`` exactly a black
            image, as in :func:`medcnn.explain.explain` (else the darkest pixel of ``x``).

    Returns:
        dict: ``deletion_auc``, ``insertion_auc``, ``random_deletion_auc``,
        ``random_insertion_auc``, ``fractions``, ``deletion_curve``, ``insertion_curve``
        (lists), and the settings used.

    Raises:
        ValueError: unknown baseline or score, too few steps, or a heatmap whose shape is
            not the input size.
    """
    if baseline not in ("blur", "black"):
        raise ValueError(f"baseline must be 'blur' or 'black', got {baseline!r}")
    if score not in ("prob", "logit") or steps < 2 or batch < 1 or n_random < 1:
        raise ValueError("score must be 'prob'/'logit', steps >= 2, batch >= 1, n_random >= 1")
    hm = np.asarray(heatmap, dtype=np.float64)
    if hm.shape != tuple(x.shape[-2:]):
        raise ValueError(f"heatmap shape {hm.shape} != input size {tuple(x.shape[-2:])}")
    xc = x.detach().clone().float()
    black = black_value(pipeline) if pipeline is not None else None
    base, bparams = make_baseline(xc, baseline, black=black, **baseline_options)
    iso = isolated_copy(model)
    rng = np.random.default_rng(seed)
    jitter = rng.random(hm.size) * 1e-9 * max(float(np.ptp(hm)), 1e-12)
    order = np.argsort(-(hm.ravel() + jitter), kind="stable")
    dele, ins = _curves(iso, xc, base, order, target, steps, batch, score)
    rd, ri = [], []
    for _ in range(n_random):
        o = rng.permutation(hm.size)
        d, i = _curves(iso, xc, base, o, target, steps, batch, score)
        rd.append(_curve_auc(d))
        ri.append(_curve_auc(i))
    return {
        "deletion_auc": _curve_auc(dele),
        "insertion_auc": _curve_auc(ins),
        "random_deletion_auc": float(np.mean(rd)),
        "random_insertion_auc": float(np.mean(ri)),
        "fractions": np.linspace(0, 1, steps + 1).tolist(),
        "deletion_curve": dele.tolist(),
        "insertion_curve": ins.tolist(),
        "score": score,
        **bparams,
    }
