"""Per-call isolation of a shared model, layer lookup and memory budgeting.

Why a per-call copy instead of a lock
-------------------------------------
The app keeps ONE model for all users. Captum attaches forward hooks (Grad-CAM) and
backward hooks (guided backprop) to modules; hooks on a shared module fire for *every*
forward pass running through it, so two threads explaining at once (or one explaining
while another predicts) would capture each other's activations. A lock would serialise
explanations *and* still leak hooks into concurrent plain predictions.

Instead every explanation runs on :func:`isolated_copy`: a shallow copy of the module
tree. Each module object is copied (so it has its own hook dictionaries, ``training``
flag and ``inplace`` flags), while parameters and buffers *share storage* with the
original (parameters are re-wrapped as ``requires_grad=False`` views, so no gradient is
ever accumulated on the shared weights). Hooks registered by Captum land on the copy
only; the caller's model never sees a hook, a changed ``training`` flag or a changed
``requires_grad``. Copying the tree is cheap next to any attribution pass.

A faster private copy for input gradients
-----------------------------------------
Path methods (Integrated Gradients, SmoothGrad) need only d logit / d input, in many
batched passes, and never hook a layer (occlusion needs only forward passes). For them
:func:`fast_copy` returns a *deep* copy in which every eval-mode BatchNorm that directly
follows a convolution is folded into it (``torch.fx.experimental.optimization.fuse``;
exact up to float rounding) and, on CPU, weights are in channels-last layout (oneDNN's
fast path), which makes each forward+backward pass faster (BENCHMARKS.md, section 2).
The copy is checked against the isolated copy on the caller's input and discarded if the
logits differ by more than float32 rounding; models that ``torch.fx`` cannot trace simply
use the isolated copy. It is cached per model and rebuilt when any parameter or buffer
changes in place.
"""
from __future__ import annotations

import difflib
import weakref
from typing import Any

import torch
from torch import nn

from medcnn.notices import quiet

__all__ = ["isolated_copy", "fast_copy", "resolve_layer", "probe", "Probe", "DEFAULT_MEMORY_BUDGET"]

#: Default memory budget (bytes) for batched attribution passes.
DEFAULT_MEMORY_BUDGET = 1 << 30
#: Largest forward+backward batch on CPU: beyond it the activations leave the cache and
#: the time per sample rises (measured in BENCHMARKS.md, section 2).
CPU_MAX_GRAD_BATCH = 16


def _copy_module(module: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    if id(module) in memo:  # shared submodules (e.g. a ReLU used twice) stay shared
        return memo[id(module)]
    new = object.__new__(type(module))  # like copy.copy, without the __reduce_ex__ cost
    state = dict(module.__dict__)
    for name, value in state.items():
        # Fresh hook containers (OrderedDict / dict / set), never the original's.
        if name.startswith("_") and "hook" in name and isinstance(value, (dict, set)):
            state[name] = type(value)(value)
    new.__dict__.update(state)
    memo[id(module)] = new
    d = new.__dict__  # plain dict writes: nn.Module.__setattr__ is slow
    d["_parameters"] = {
        k: (None if p is None else nn.Parameter(p.detach(), requires_grad=False))
        for k, p in module._parameters.items()
    }
    d["_buffers"] = dict(module._buffers)
    d["_modules"] = {
        k: (None if m is None else _copy_module(m, memo)) for k, m in module._modules.items()
    }
    if isinstance(d.get("inplace"), bool):
        # Captum's guided backprop puts backward hooks on nn.ReLU; in-place ReLUs break
        # them. Turning in-place off on the copy changes memory use, not values.
        d["inplace"] = False
    return new


def isolated_copy(model: nn.Module) -> nn.Module:
    """Hook-safe, grad-free, eval-mode shallow copy of ``model`` sharing its weights.

    Args:
        model: Any ``nn.Module``; it is not modified.

    Returns:
        A module tree with the same structure and dotted names, in eval mode, whose
        parameters are ``requires_grad=False`` views of the original storage.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    new = _copy_module(model, {})
    new.eval()  # sets the copies' flags only
    return new


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule at dotted path ``name`` (``"features.denseblock4"``).

    Raises:
        ValueError: the name does not exist; the message lists the closest names and the
            model's blocks (modules with children, the usual CAM layers; all module names
            for a model without nested blocks).
    """
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        blocks = [n for n, m in model.named_modules() if n and any(True for _ in m.children())]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"closest names: {', '.join(close)}; " if close else ""
        tail = ", ".join((blocks or names)[-12:])
        raise ValueError(
            f"layer {name!r} not found in {type(model).__name__}; {hint}"
            f"{'last blocks' if blocks else 'last module names'}: {tail}"
        ) from None


class Probe:
    """What one batch-1 forward pass tells us about a model at an input size.

    Attributes:
        num_outputs: Number of logits.
        bytes_per_sample: Estimated memory of one sample in a forward+backward pass
            (2 x the sum of all module outputs: saved activations plus gradients).
        forward_bytes_per_sample: Largest two consecutive activations (forward only).
        last_spatial_layer: Dotted name of the last module (in execution order) with a
            4-D output larger than 1 x 1: the default Grad-CAM layer.
    """

    def __init__(self, num_outputs: int, bytes_per_sample: int, forward_bytes: int, last: str | None):
        self.num_outputs = num_outputs
        self.bytes_per_sample = bytes_per_sample
        self.forward_bytes_per_sample = forward_bytes
        self.last_spatial_layer = last


_PROBES: "weakref.WeakKeyDictionary[nn.Module, dict[Any, Probe]]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def probe(model: nn.Module, copy_: nn.Module, x: torch.Tensor) -> Probe:
    """Probe ``copy_`` (an isolated copy of ``model``) once per input shape; cached per model."""
    key = (tuple(x.shape[1:]), x.dtype, str(x.device))
    cache = _PROBES.setdefault(model, {})
    if key in cache:
        return cache[key]
    sizes: list[int] = []
    last: list[str] = []
    names = {id(m): n for n, m in copy_.named_modules()}
    handles = []

    def hook(mod: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel() * out.element_size())
            if out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1 and names.get(id(mod)):
                last.append(names[id(mod)])

    try:
        for m in copy_.modules():
            if m is not copy_:
                handles.append(m.register_forward_hook(hook))
        out = copy_(x[:1])
    finally:
        for h in handles:
            h.remove()
    if out.dim() != 2:
        raise ValueError(f"model must return logits of shape (N, classes), got {tuple(out.shape)}")
    inp = x[:1].numel() * x.element_size()
    pairs = [a + b for a, b in zip(sizes, sizes[1:])] or [inp]
    result = Probe(
        num_outputs=int(out.shape[1]),
        bytes_per_sample=2 * (sum(sizes) + inp),
        forward_bytes=max(pairs) + inp,
        last=last[-1] if last else None,
    )
    cache[key] = result
    return result


def batch_size(per_sample: int, budget: int, n: int, device: torch.device | None = None) -> int:
    """Largest batch (>= 1, <= n) whose estimated memory fits ``budget`` bytes.

    With ``device`` given (a gradient pass), batches on CPU are capped at
    :data:`CPU_MAX_GRAD_BATCH`.
    """
    bs = int(max(1, min(n, budget // max(per_sample, 1))))
    if device is not None and torch.device(device).type == "cpu":
        bs = min(bs, CPU_MAX_GRAD_BATCH)
    return bs


_FAST: "weakref.WeakKeyDictionary[nn.Module, tuple[Any, nn.Module | None]]" = weakref.WeakKeyDictionary()


def _weights_signature(model: nn.Module, x: torch.Tensor) -> tuple:
    """Identity of the weights' current values.

    Storage address and autograd version counter of every parameter and buffer (any
    in-place change through torch ops bumps the counter), plus their sums, which also
    catch writes through ``.data`` (those leave the counter alone). Computing it is small
    next to the IG pass it guards.
    """
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.numel()]
    with torch.no_grad():
        sums = torch.stack([t.detach().sum().double() for t in tensors]).tolist() if tensors else []
    return (x.dtype, str(x.device), tuple((t.data_ptr(), t._version) for t in tensors), tuple(sums))


class _ChannelsLast(nn.Module):
    """Feeds 4-D inputs to ``inner`` in channels-last layout (CPU oneDNN fast path)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def _build_fast(copy_: nn.Module, x: torch.Tensor) -> nn.Module | None:
    from torch.fx.experimental.optimization import fuse

    try:
        with quiet(Warning, reason="torch.fx tracing notes; an untraceable model has no fast path"):
            fused = fuse(copy_, inplace=False)
    except Exception:  # noqa: BLE001 - untraceable forward (control flow): no fast path
        return None
    for p in fused.parameters():
        p.requires_grad_(False)
    if x.device.type == "cpu" and x.dim() == 4:
        fused = _ChannelsLast(fused.to(memory_format=torch.channels_last))
    fused.eval()
    with torch.no_grad():
        ref, out = copy_(x[:1]), fused(x[:1])
    if out.shape != ref.shape or not torch.allclose(out, ref, rtol=1e-3, atol=1e-4 * (1 + float(ref.abs().max()))):
        return None
    return fused


def fast_copy(model: nn.Module, copy_: nn.Module, x: torch.Tensor) -> nn.Module:
    """A private, BN-folded (and on CPU channels-last) copy for input-gradient passes.

    Args:
        model: The caller's model (cache key; not modified).
        copy_: Its :func:`isolated_copy`, returned unchanged if no fast copy can be built.
        x: Example input (1, C, H, W) used to check the fast copy's logits.

    Returns:
        A module computing the same logits as ``copy_``. It has no hooks and must not be
        given any (it may be shared by concurrent calls on the same model).
    """
    sig = _weights_signature(model, x)
    hit = _FAST.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1] if hit[1] is not None else copy_
    fast = _build_fast(copy_, x)
    _FAST[model] = (sig, fast)
    return fast if fast is not None else copy_
