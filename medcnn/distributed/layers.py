"""Layers whose data-parallel step equals the single-process step: BatchNorm and dropout.

With each rank holding a share of the global batch, two layers would see something else than in
a single-process run:

* **BatchNorm** normalises with the statistics of the rows it sees. :class:`GlobalBatchNorm`
  all-reduces the per-channel sums (a differentiable all-reduce, so the backward pass is that of
  the global batch too) and normalises every share with the *global batch's* mean and variance,
  on CPU (gloo) as on CUDA; torch's own ``SyncBatchNorm`` does the same but only on accelerators,
  so it is used on CUDA (:func:`make_data_parallel`).
* **Dropout** draws one mask for the batch from the global random stream. :class:`ShardedDropout`
  draws the mask of the whole global batch (every rank holds the same generator state) and keeps
  its share's rows, so each row gets the mask it gets in a single-process run.

:func:`make_data_parallel` swaps these in; :func:`make_single_process` swaps the plain layers back
with the same weights and statistics, so the checkpoint is the registry's model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["GlobalBatchNorm", "ShardPlan", "ShardedDropout", "make_data_parallel", "make_single_process"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class ShardPlan:
    """Which rows of the global batch this rank's forward pass holds (set before each step).

    Attributes:
        rows: ``(global batch size, first row of this rank)``, or None outside a training step.
        originals: dotted module name -> the class it had before :func:`make_data_parallel`.
    """

    rows: tuple[int, int] | None = None
    originals: dict[str, type] = field(default_factory=dict)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is the sum of the ranks' gradients (d sum_r x_r / d x_r = 1
    for the loss of every rank)."""

    @staticmethod
    def forward(ctx: object, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def _reduce(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm with the statistics of the global batch over all ranks (Ioffe & Szegedy 2015, Alg. 1).

    Shapes: ``(N, C, ...) -> (N, C, ...)``; N may differ between ranks. Outside a joined process
    group, or in eval mode, it is plain BatchNorm. The running variance is updated with the
    unbiased global variance, as ``nn.BatchNorm2d`` does for one process.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an (N, C, ...) input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        sums = _reduce(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = _reduce((centred * centred).sum(dims)) / n  # biased, as used to normalise
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp(min=1)), alpha=m)
        return out


class ShardedDropout(nn.Dropout):
    """Dropout whose mask is the global batch's mask, cut to this rank's rows.

    Args:
        p: Drop probability.
        plan: The run's :class:`ShardPlan` (``plan.rows`` says which rows this rank holds).
    """

    def __init__(self, p: float, plan: ShardPlan):
        super().__init__(p)
        self.plan = plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.plan.rows is None:
            return super().forward(x)
        n, start = self.plan.rows
        # the same draw, from the same generator state, as dropout on the (n, ...) batch
        noise = F.dropout(x.new_ones((n, *x.shape[1:])), self.p, True)
        return x * noise[start:start + x.shape[0]]


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _copy_norm(old: nn.Module, new: nn.Module) -> nn.Module:
    new.load_state_dict(old.state_dict())
    return new.to(device=old.running_mean.device if old.running_mean is not None else "cpu")


def make_data_parallel(model: nn.Module, device: torch.device) -> ShardPlan:
    """Swap in the data-parallel BatchNorm and dropout layers (in place; weights kept).

    Args:
        model: The freshly built network.
        device: Where it trains: CUDA gets torch's ``SyncBatchNorm``, other devices
            :class:`GlobalBatchNorm`.

    Returns:
        The :class:`ShardPlan` the training step fills in before each forward pass.
    """
    plan = ShardPlan()
    for name, m in list(model.named_modules()):
        if isinstance(m, _BATCHNORMS) and not isinstance(m, GlobalBatchNorm):
            cls = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm
            new = cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            _swap(model, name, _copy_norm(m, new))
            plan.originals[name] = type(m)
        elif type(m) is nn.Dropout:
            _swap(model, name, ShardedDropout(m.p, plan))
            plan.originals[name] = nn.Dropout
    return plan


def make_single_process(model: nn.Module, plan: ShardPlan) -> nn.Module:
    """Undo :func:`make_data_parallel`: the plain layers back, with the trained weights and statistics.

    Returns:
        ``model`` (changed in place), whose ``state_dict`` keys are unchanged.
    """
    for name, cls in plan.originals.items():
        m = model.get_submodule(name)
        if cls is nn.Dropout:
            _swap(model, name, nn.Dropout(m.p))
        else:
            new = cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            _swap(model, name, _copy_norm(m, new))
    plan.originals.clear()
    plan.rows = None
    return model
