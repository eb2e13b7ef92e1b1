"""Integrated Gradients with adaptive composite Gauss-Legendre quadrature.

IG (Sundararajan et al. 2017, eq. 1) attributes ``f(x) - f(x')`` to pixels, where ``f`` is
the explained score (:mod:`medcnn.explain.objective`; by default the logit difference of a
softmax head, so completeness holds for the difference):

    IG_i(x) = (x_i - x'_i) * integral_0^1 df/dx_i (x' + a (x - x')) da

Completeness: ``sum_i IG_i = f(x) - f(x')``; the *convergence delta*
``sum_i IG_i - (f(x) - f(x'))`` measures the quadrature error (Captum's definition).

How we integrate
----------------
The path [0, 1] is split into panels, each integrated with a ``nodes``-point
Gauss-Legendre rule (:func:`gauss_legendre`, the rule Captum's ``"gausslegendre"``
method uses). For a panel [a, b] the exact integral of the path derivative is
``f(b) - f(a)`` (fundamental theorem of calculus), which costs one *forward-only* pass per
boundary. So every panel has an exact local error ``e = quadrature(a, b) - (f(b) - f(a))``,
and the global delta is exactly ``sum(e)``. While ``|delta| > tol * |f(x) - f(x')|`` the
panels with the largest ``|e|`` are split in two; gradient evaluations go where the
network's gradient changes along the path (for ReLU networks mostly near the baseline),
not uniformly. With ``n_steps`` given, a single panel with that many nodes is used
instead (plain Gauss-Legendre).

What the delta does and does not say
------------------------------------
For a trained ReLU network the path derivative is piecewise constant with many small
jumps, so the quadrature error of the *attribution map* falls only like 1/steps, and the
scalar delta (a sum of signed local errors that partly cancel) is a noisy, optimistic
proxy for it: a rule can meet the delta tolerance while its map is still visibly off a
fine reference. Hence (a) the first check happens only after ``init_panels * nodes``
gradients (a default chosen on validation films, never on test images), and (b) the
result also reports ``rel_local_error`` = sum |local error| / |f(x) - f(x')|, a
cancellation-free companion of the delta. The measurements are in BENCHMARKS.md
(section 2).

Gradient evaluations are batched with a batch size bounded by a memory budget.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BASELINES", "completeness_text", "make_baseline", "adaptive_ig", "gaussian_blur", "gauss_legendre"]

#: Named baselines of :func:`make_baseline`.
BASELINES = ("black", "blur", "mean")

Panel = tuple[float, float]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding (radius 3 sigma)."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, min(x.shape[-2:]) - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, -1)
    c = x.shape[1]
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_baseline(
    x: torch.Tensor,
    baseline: str | float | torch.Tensor = "black",
    *,
    baseline_value: float | None = None,
    black: float | None = None,
    sigma: float | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Build an IG / occlusion / deletion baseline in the *normalised* tensor space.

    Args:
        x: Input (1, C, H, W), already normalised as the network receives it.
        baseline: ``"black"``: a black image as the network receives it, i.e. the constant
            ``baseline_value`` if given, else ``black`` (the pipeline's normalised value of
            display 0, :func:`medcnn.explain.black_value`), else ``x.min()``: the darkest
            pixel of this input, which is black only if the image has a black pixel (a
            windowed image usually has; pass the pipeline to be exact). ``"blur"``: ``x``
            blurred with a Gaussian of ``sigma`` pixels (default ``H / 16``). ``"mean"``:
            constant ``baseline_value`` (default 0.0, the normalised dataset mean under
            mean/std normalisation). A float is a constant; a tensor broadcastable to ``x``
            is used as is.
        baseline_value: See above.
        black: Normalised value of a black pixel, or None when no pipeline is known.
        sigma: Blur standard deviation in pixels.

    Returns:
        (baseline tensor shaped like x, params dict describing it; for ``"black"``,
        ``black_from`` says where the value came from: ``"baseline_value"``,
        ``"pipeline"`` or ``"input minimum"``).

    Raises:
        ValueError: unknown baseline name.
    """
    if isinstance(baseline, torch.Tensor):
        b = baseline.to(dtype=x.dtype, device=x.device).expand_as(x).clone()
        return b, {"baseline": "tensor"}
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline)), {"baseline": "constant", "baseline_value": float(baseline)}
    if baseline == "black":
        if baseline_value is not None:
            v, source = float(baseline_value), "baseline_value"
        elif black is not None:
            v, source = float(black), "pipeline"
        else:
            v, source = float(x.min()), "input minimum"
        return torch.full_like(x, v), {"baseline": "black", "baseline_value": v, "black_from": source}
    if baseline == "mean":
        v = 0.0 if baseline_value is None else float(baseline_value)
        return torch.full_like(x, v), {"baseline": "mean", "baseline_value": v}
    if baseline == "blur":
        s = float(sigma) if sigma is not None else x.shape[-2] / 16.0
        return gaussian_blur(x, s), {"baseline": "blur", "sigma": s}
    raise ValueError(
        f"unknown baseline {baseline!r}; use one of {BASELINES}, a float or a tensor"
    )


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n``-point Gauss-Legendre rule on [0, 1]: (nodes ascending, weights summing to 1).

    The standard rule on [-1, 1] (``numpy.polynomial.legendre.leggauss``) mapped by
    ``a = (t + 1) / 2``; exact for polynomials of degree ``2n - 1``.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"a Gauss-Legendre rule needs at least 1 node, got {n}")
    t, w = np.polynomial.legendre.leggauss(int(n))
    return 0.5 * (t + 1.0), 0.5 * w


class _StraightPath:
    """The path ``baseline + a (x - baseline)``, a in [0, 1], evaluated in batches."""

    def __init__(self, logit: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 baseline: torch.Tensor, batch: int):
        self.logit, self.x, self.baseline, self.batch = logit, x, baseline, batch
        self.diff = x - baseline

    def _points(self, alphas: list[float]) -> torch.Tensor:
        a = torch.tensor(alphas, dtype=self.x.dtype, device=self.x.device).view(-1, 1, 1, 1)
        return self.baseline + a * self.diff

    def gradients(self, alphas: list[float]) -> torch.Tensor:
        """d logit / d input at each path point: (len(alphas), C, H, W)."""
        out = []
        for i in range(0, len(alphas), self.batch):
            inp = self._points(alphas[i : i + self.batch]).requires_grad_(True)
            (g,) = torch.autograd.grad(self.logit(inp).sum(), inp)
            out.append(g.detach())
        return torch.cat(out)

    @torch.no_grad()
    def values(self, alphas: list[float]) -> dict[float, float]:
        """Logit at each path point (forward only: batches three times larger)."""
        res: dict[float, float] = {}
        fb = max(1, self.batch * 3)  # forward-only passes need roughly a third of the memory
        for i in range(0, len(alphas), fb):
            chunk = alphas[i : i + fb]
            res.update(zip(chunk, self.logit(self._points(chunk)).tolist()))
        return res


class _CompositeRule:
    """Panels of the composite Gauss-Legendre rule, each with its exact local error."""

    def __init__(self, path: _StraightPath, nodes: int, panels: list[Panel]):
        self.path, self.nodes = path, nodes
        self.xs, self.ws = gauss_legendre(nodes)
        self.fvals = path.values(sorted({p for ab in panels for p in ab}))
        # panel -> (weighted gradient sum (1, C, H, W), local error)
        self.panels: dict[Panel, tuple[torch.Tensor, float]] = {}
        self.steps = 0
        self.integrate(panels)

    def integrate(self, new: list[Panel]) -> None:
        """Gauss-Legendre sums of ``new`` panels (whose boundary values are known)."""
        alphas = [a + (b - a) * t for a, b in new for t in self.xs]
        g = self.path.gradients(alphas)
        self.steps += len(alphas)
        w = torch.tensor(self.ws, dtype=g.dtype, device=g.device).view(-1, 1, 1, 1)
        for i, (a, b) in enumerate(new):
            gs = (g[i * self.nodes : (i + 1) * self.nodes] * w).sum(0, keepdim=True) * (b - a)
            quad = float((gs * self.path.diff).sum())
            self.panels[(a, b)] = (gs, quad - (self.fvals[b] - self.fvals[a]))

    @property
    def delta(self) -> float:
        """Sum of the local errors: the convergence delta of the current rule."""
        return sum(e for _, e in self.panels.values())

    def worst(self, max_steps: int) -> list[Panel]:
        """Panels carrying the top half of the total |local error|, as many as fit the budget."""
        order = sorted(self.panels, key=lambda p: -abs(self.panels[p][1]))
        total = sum(abs(self.panels[p][1]) for p in order)
        chosen: list[Panel] = []
        acc = 0.0
        for p in order:
            if acc >= 0.5 * total or self.steps + 2 * self.nodes * (len(chosen) + 1) > max_steps:
                break
            chosen.append(p)
            acc += abs(self.panels[p][1])
        return chosen

    def split(self, chosen: list[Panel]) -> None:
        """Halve each chosen panel and integrate the halves."""
        mids = [(a + b) / 2 for a, b in chosen]
        self.fvals.update(self.path.values(mids))
        new: list[Panel] = []
        for (a, b), m in zip(chosen, mids):
            del self.panels[(a, b)]
            new += [(a, m), (m, b)]
        self.integrate(new)

    def attribution(self) -> torch.Tensor:
        """IG map (1, C, H, W): (x - baseline) times the integrated gradient."""
        return (sum(gs for gs, _ in self.panels.values()) * self.path.diff).detach()


def adaptive_ig(
    logit: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    baseline: torch.Tensor,
    *,
    batch: int,
    tol: float = 0.01,
    nodes: int = 4,
    init_panels: int = 4,
    max_steps: int = 256,
    n_steps: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Integrated Gradients of the score ``logit`` along the straight path baseline -> x.

    Does not warn: ``info["converged"]`` says whether the tolerance was met
    (:func:`medcnn.explain.explain` turns a miss into a warning at its caller).

    Args:
        logit: Maps (N, C, H, W) -> (N,) target scores (differentiable): a logit, or the
            objective of :mod:`medcnn.explain.objective`.
        x: (1, C, H, W) input.
        baseline: (1, C, H, W) baseline.
        batch: Maximum number of path points per forward/backward pass.
        tol: Stop when ``|delta| <= tol * |f(x) - f(baseline)|``.
        nodes: Gauss-Legendre nodes per panel.
        init_panels: Panels before refinement (``init_panels * nodes`` gradients are the
            minimum; see the module docstring).
        max_steps: Maximum gradient evaluations; the first ``init_panels * nodes`` are
            always done, so a call uses at most ``max(max_steps, init_panels * nodes)``.
        n_steps: If given, one panel with ``n_steps`` nodes and no refinement.

    Returns:
        (attribution (1, C, H, W), info dict with ``delta``, ``rel_delta``,
        ``rel_local_error``, ``steps``, ``rule`` (``"fixed"`` / ``"adaptive"``), ``converged``, ``f_x``, ``f_baseline``, ``panels``,
        ``nodes_per_panel``, ``tol``, ``precision_floor``).

    Raises:
        ValueError: ``tol <= 0`` or ``nodes``, ``init_panels``, ``max_steps`` below 1.
    """
    if tol <= 0 or nodes < 1 or init_panels < 1 or max_steps < 1:
        raise ValueError(f"tol must be > 0 and nodes, init_panels, max_steps >= 1; got tol={tol}, "
                         f"nodes={nodes}, init_panels={init_panels}, max_steps={max_steps}")
    if n_steps is not None:
        nodes, first = int(n_steps), [(0.0, 1.0)]
    else:
        first = [(k / init_panels, (k + 1) / init_panels) for k in range(init_panels)]
    rule = _CompositeRule(_StraightPath(logit, x, baseline, batch), nodes, first)
    f0, f1 = rule.fvals[0.0], rule.fvals[1.0]
    ref = abs(f1 - f0)
    # float32 resolution of the logits: a delta below it is rounding noise, not quadrature
    # error, so it always counts as converged (otherwise a tiny tol would never stop).
    floor = 1e-6 * max(abs(f0), abs(f1))
    while True:
        converged = abs(rule.delta) <= max(tol * ref, floor)
        if converged or n_steps is not None or rule.steps + 2 * nodes > max_steps:
            break
        rule.split(rule.worst(max_steps))
    attr = rule.attribution()
    delta = float(attr.sum()) - (f1 - f0)
    return attr, {
        "delta": delta,
        "rel_delta": abs(delta) / ref if ref > 0 else 0.0,
        "rel_local_error": sum(abs(e) for _, e in rule.panels.values()) / ref if ref > 0 else 0.0,
        "steps": rule.steps,
        "rule": "fixed" if n_steps is not None else "adaptive",
        "converged": bool(converged),
        "f_x": f1,
        "f_baseline": f0,
        "panels": len(rule.panels),
        "nodes_per_panel": nodes,
        "tol": tol,
        "precision_floor": floor,
    }


def completeness_text(params: dict[str, Any]) -> str:
    """How exactly an IG map adds up, in words (the app caption and ``explain --json`` share it).

    ``rel_delta`` is |sum of attributions - (f(x) - f(baseline))| / |f(x) - f(baseline)|;
    ``rel_local_error`` is the same without cancellation between path segments, the more
    cautious figure of the map's quadrature error. Empty for params without them.
    """
    if "rel_delta" not in params:
        return ""
    text = (f"{params['steps']} path steps; attributions add up to the logit change "
            f"within {params['rel_delta']:.1%}")
    if "rel_local_error" in params:
        text += f" (segment errors without cancellation: {params['rel_local_error']:.1%})"
    return text
