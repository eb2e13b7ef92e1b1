"""Data-parallel training under ``torchrun``: the process group and each rank's share of a step.

``torchrun --nproc_per_node=N -m medcnn train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. :func:`process_group` joins them (gloo on CPU, nccl on
CUDA) for the length of a run and leaves the group afterwards; outside torchrun it does nothing.

One convention makes a data-parallel run reproduce the single-process run: every rank draws the
*same* global batch order from the same seeded sampler (the plain permutation, the label-balanced
sampler or the (label, column)-balanced sampler: the training loop's own samplers, unchanged),
and each rank trains on one contiguous share of every global batch (:meth:`World.share`). The
loss of a share is rescaled (:func:`share_scale`) so that DistributedDataParallel's gradient
average equals the gradient of the global batch's loss; ``--batch-size`` stays the global batch.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["RowSubset", "World", "all_sum", "current_world", "gather_rows", "launched_world",
           "process_group", "rank_device", "share_scale"]

#: How long a collective waits for a missing rank before failing (a crashed peer).
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: This process's index, 0 .. ``size - 1`` (0 writes checkpoints and prints).
        size: Number of processes (1: a plain single-process run).
        local_rank: Index on this machine (the CUDA device a rank uses).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process trains."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """This process writes the checkpoint, the card and the progress lines."""
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """This rank's rows ``[start, stop)`` of a batch of ``n`` rows.

        Contiguous chunks in rank order; the first ``n % size`` ranks get one row more, so
        the chunks of all ranks, concatenated, are the batch.
        """
        base, extra = divmod(int(n), self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)


def launched_world() -> World:
    """The world torchrun describes in the environment (``World()`` when not launched by it).

    Raises:
        ValueError: inconsistent ``RANK`` / ``WORLD_SIZE`` values.
    """
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK {rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE {size})")
    return World(rank, size, local)


def current_world() -> World:
    """The world of the joined process group, or ``World()`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), launched_world().local_rank)
    return World()


def rank_device(device: torch.device) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` for CUDA in a data-parallel run."""
    world = current_world()
    if world.distributed and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


@contextlib.contextmanager
def process_group(device: str | None = None) -> Iterator[World]:
    """Join torchrun's process group for the length of a run (a no-op outside torchrun).

    The backend is nccl when the run trains on CUDA (each rank on ``cuda:LOCAL_RANK``) and gloo
    otherwise. A group that is already joined (a caller that initialised it) is used as it is and
    left to its owner.

    Args:
        device: The run's ``--device`` (``None``: ``MEDCNN_DEVICE``, else CUDA when present).

    Yields:
        The :class:`World` of this process.
    """
    world = launched_world()
    if not world.distributed or not dist.is_available() or dist.is_initialized():
        yield current_world()
        return
    from medcnn.models import get_device

    cuda = get_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield current_world()
        dist.barrier()  # nobody leaves before rank 0 has written the checkpoint
    finally:
        dist.destroy_process_group()


def share_scale(loss_fn: nn.Module, targets: Sequence[int] | np.ndarray, start: int, stop: int,
                world: World) -> float:
    """Factor that turns the mean loss of rows ``[start, stop)`` into this rank's part of the
    global batch's mean loss, as DistributedDataParallel averages it.

    DDP averages gradients over ranks, so rank r's loss must be ``size * d_r / D``, where
    ``d_r`` is the normaliser of its mean (its row count; for class-weighted cross-entropy the
    sum of its rows' class weights; for a loss with a ``mean_weights(targets)`` method, the sum
    of what it returns for its rows, e.g. the known labels of a masked multi-label loss) and
    ``D`` the global batch's. Then ``mean_r(size * d_r / D * loss_r) = sum_r d_r loss_r / D``,
    the global mean.

    Args:
        loss_fn: The run's loss (mean reduction).
        targets: Targets of the whole global batch: class indices (B,), or what the loss's
            ``mean_weights`` reads (e.g. a (B, C) multi-label matrix).
        start, stop: This rank's rows (:meth:`World.share`).
        world: The run's world.

    Returns:
        The factor (1.0 in a single-process run).
    """
    if not world.distributed:
        return 1.0
    mean_weights = getattr(loss_fn, "mean_weights", None)
    if callable(mean_weights):
        w = torch.as_tensor(mean_weights(targets), dtype=torch.float64)
        total = float(w.sum())
        # no row counts anywhere: every rank's loss is 0 and so is its gradient
        return float(world.size * w[start:stop].sum() / total) if total > 0 else 0.0
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    weight = getattr(loss_fn, "weight", None)
    if isinstance(loss_fn, nn.CrossEntropyLoss) and weight is not None:
        w = weight.detach().cpu()[y].double()
        return float(world.size * w[start:stop].sum() / w.sum())
    return world.size * (stop - start) / len(y)


def all_sum(values: Sequence[float]) -> list[float]:
    """Sum of ``values`` over every rank (the values themselves in a single-process run)."""
    if not current_world().distributed:
        return [float(v) for v in values]
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.cpu().tolist()


class RowSubset:
    """Some rows of a dataset that makes model input in batches (``tensor_batch(indices)``).

    Args:
        dataset: Anything with ``tensor_batch(indices)`` (e.g. :class:`medcnn.training.data.ImageDataset`).
        rows: Row indices of ``dataset`` to expose, in order.
    """

    def __init__(self, dataset: Any, rows: Sequence[int]):
        self.dataset = dataset
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def tensor_batch(self, indices: Sequence[int]) -> Any:
        """float32 (B, 1, H, W) model input of the subset's rows ``indices``."""
        return self.dataset.tensor_batch([self.rows[i] for i in indices])


def gather_rows(predict: Callable[[Sequence[int]], np.ndarray], n: int) -> np.ndarray:
    """Each rank predicts its share of ``n`` rows; every rank gets all ``n`` results in row order.

    Every rank ends up with the same array (the same bytes), so decisions taken from it
    (early stopping, the best epoch) agree on all ranks.

    Args:
        predict: ``rows -> (len(rows), C)`` array, for a non-empty list of row indices.
        n: Number of rows.

    Returns:
        (n, C) array.
    """
    world = current_world()
    if not world.distributed:
        return predict(range(n))
    start, stop = world.share(n)
    part = predict(range(start, stop)) if stop > start else None
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, part)
    return np.concatenate([p for p in parts if p is not None])
