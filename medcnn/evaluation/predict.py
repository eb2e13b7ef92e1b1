"""Logits of a model over a dataset: one loop, for training's validation, ``evaluate`` and the CLI.

It lives here rather than in :mod:`medcnn.training` because training already depends on
evaluation (metrics, calibration) and evaluation must not depend on training; every batch goes
through :func:`medcnn.models.checkpoint.predict_logits`, the batch primitive the serving path
(:mod:`medcnn.inference`) uses too.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["CardRows", "TensorBatches", "predict_dataset"]


class TensorBatches(Protocol):
    """What :func:`predict_dataset` runs a model over: rows that turn into model input in batches.

    :class:`medcnn.training.data.ImageDataset` (cached display images) and :class:`CardRows`
    (files read through a card's pipeline, for :func:`medcnn.evaluation.evaluate.score_dataset`)
    implement it.
    """

    def __len__(self) -> int: ...

    def tensor_batch(self, indices: Sequence[int]) -> Any:
        """float32 tensor (B, 1, H, W) of the rows ``indices``, normalised, not augmented."""


def predict_dataset(model: Any, dataset: TensorBatches, batch_size: int = 32, device: Any = None) -> np.ndarray:
    """Logits of ``model`` on every row of ``dataset``, in row order: the one dataset loop.

    Each batch goes through :func:`medcnn.models.checkpoint.predict_logits`, the serving path's
    batch primitive (``torch.inference_mode``, channels-last input on CUDA), so training's
    validation, ``evaluate`` and the app compute logits the same way.

    Args:
        model: ``nn.Module`` returning logits (B, C); it is put in eval mode.
        dataset: Rows with ``len()`` and ``tensor_batch(indices)`` (:class:`TensorBatches`).
        batch_size: Rows per forward pass.
        device: Where to run (default: the device of the model's parameters).

    Returns:
        float32 (N, C) logits.

    Raises:
        ValueError: the dataset is empty, or ``batch_size < 1``.
    """
    from medcnn.models.checkpoint import predict_logits

    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty: nothing to predict")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    batches = [predict_logits(model, dataset.tensor_batch(range(s, min(s + batch_size, n))), device).numpy()
               for s in range(0, n, batch_size)]
    return np.concatenate(batches).astype(np.float32, copy=False)


class CardRows:
    """Image files as model input through a pipeline: the tensors the app computes for them.

    Args:
        paths: Image files (DICOM, PNG or JPEG).
        pipeline: The model card's :class:`medcnn.preprocess.Pipeline`.
    """

    def __init__(self, paths: Sequence[str], pipeline: Any):
        self.paths = list(paths)
        self.pipeline = pipeline
        #: row -> whether its header turned it upright (``Pipeline.upright_by_header``), per row read
        self.upright: dict[int, bool] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def tensor_batch(self, indices: Sequence[int]) -> Any:
        """float32 (B, 1, H, W): ``pipeline(read_image(path)).tensor`` of each row.

        Raises:
            UnsupportedImageError: a file cannot be read (the message names it).
        """
        import torch

        from medcnn.io import UnsupportedImageError, read_image

        tensors = []
        for i in indices:
            try:
                image = read_image(self.paths[i])
                tensors.append(self.pipeline(image, keep_steps=False).tensor)
                self.upright[i] = self.pipeline.upright_by_header(image.meta)
            except UnsupportedImageError as e:
                raise UnsupportedImageError(f"cannot read {self.paths[i]}: {e}") from None
        return torch.cat(tensors)
