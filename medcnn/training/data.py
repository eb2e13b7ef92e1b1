"""Training data: the rows of a single-label run, patient-grouped splits and the cached image dataset.

The labelled table comes from :func:`medcnn.evaluation.labels.read_labels` (re-exported
here): labels.csv files or class folders, one policy for splits, patient groups and which
files are images.

Images are read with :func:`medcnn.io.read_image` and the model's
:class:`medcnn.preprocess.Pipeline` (the same code the app runs), and the resulting
display images (float32 [0, 1], model input size) are cached in memory as uint16, so an
epoch never decodes a DICOM/PNG twice.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medcnn.evaluation.labels import STANDARD_SPLITS, read_labels
from medcnn.io import UnsupportedImageError, read_image
from medcnn.training.state import warn

if TYPE_CHECKING:
    from medcnn.training.config import TrainConfig

__all__ = [
    "DisplayCache",
    "ImageDataset",
    "grouped_kfold",
    "grouped_split",
    "label_counts",
    "load_training_data",
    "read_labels",
]


# --------------------------------------------------------------------------- splits
def grouped_kfold(df: pd.DataFrame, k: int, seed: int = 0,
                  label_col: str = "label", group_col: str = "group") -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group K-fold: no group in two folds, label mix kept per fold.

    Args:
        df: Table with ``label_col`` and ``group_col``.
        k: Number of folds (>= 2).
        seed: Shuffle seed.

    Returns:
        ``k`` pairs ``(train_positions, val_positions)`` of positional indices.

    Raises:
        ValueError: k < 2 or fewer groups than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if int(k) < 2:
        raise ValueError(f"folds must be >= 2, got {k}")
    n_groups = df[group_col].nunique()
    if n_groups < k:
        raise ValueError(f"only {n_groups} groups for {k} folds; use fewer folds")
    skf = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=int(seed))
    x = np.zeros(len(df))
    return [(tr, va) for tr, va in skf.split(x, df[label_col].to_numpy(), df[group_col].to_numpy())]


def grouped_split(df: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean mask of a grouped, stratified validation subset (~``val_fraction``)."""
    k = max(2, round(1 / val_fraction))
    _, va = grouped_kfold(df, k, seed)[0]
    mask = np.zeros(len(df), dtype=bool)
    mask[va] = True
    return mask


# --------------------------------------------------------------------------- rows of a run
def load_training_data(cfg: TrainConfig) -> tuple[pd.DataFrame, list[str], str, int]:
    """Rows for single-label training (split ``train``/``val``; ``test`` dropped), classes, positive label.

    Returns:
        ``(df, classes, positive, n_test_dropped)``.

    Raises:
        ValueError: a class or column that is not in the rows, or a positive label that is not a class.
    """
    df = read_labels(cfg.data)
    n_test = int((df["split"] == "test").sum())
    other = sorted(set(df["split"]) - set(STANDARD_SPLITS))
    if other:
        warn(f"rows of split(s) {other} are not used for training ({int(df['split'].isin(other).sum())} rows)")
    df = df[df["split"].isin(["train", "val"])].copy()
    for old, new in cfg.train_relabel.items():
        df.loc[(df["split"] == "train") & (df["label"] == old), "label"] = new
    classes = list(cfg.classes) if cfg.classes else sorted(df["label"].unique())
    present = set(df["label"])
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"class(es) {missing} not in the train/val rows; available: {', '.join(sorted(present))}")
    df = df[df["label"].isin(classes)].reset_index(drop=True)
    positive = cfg.positive or classes[-1]
    if positive not in classes:
        raise ValueError(f"--positive {positive!r} is not one of the classes {classes}")
    if not (df["split"] == "val").any():
        warn(f"no 'val' rows: holding out a patient-grouped {cfg.val_fraction:.0%} of train for validation")
        mask = grouped_split(df, cfg.val_fraction, cfg.seed)
        df.loc[mask, "split"] = "val"
    if cfg.max_train:
        tr = df[df["split"] == "train"]
        if len(tr) > cfg.max_train:
            drop = tr.sample(n=len(tr) - cfg.max_train, random_state=cfg.seed).index
            df = df.drop(index=drop).reset_index(drop=True)
    for col in (cfg.val_by, cfg.balance_by):
        if col and col not in df.columns:
            raise ValueError(f"column {col!r} not in the labels; columns: {', '.join(map(str, df.columns))}")
    return df, classes, positive, n_test


# --------------------------------------------------------------------------- dataset
class DisplayCache:
    """In-memory cache ``path -> display image`` for one pipeline.

    Images are stored as uint16 (``round(x * 65535)``; 2 bytes/pixel, error < 1e-5), so
    1,000 images at 256x256 take 131 MB.
    """

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self._store: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, path: str) -> bool:
        return path in self._store

    def get(self, path: str) -> np.ndarray:
        """Display image float32 (H, W) in [0, 1] of ``path`` (decoded on first use).

        Raises:
            UnsupportedImageError: the file cannot be decoded (the message names it).
        """
        arr = self._store.get(path)
        if arr is None:
            arr = self._load(path)
            self._store[path] = arr
        return arr.astype(np.float32) / 65535.0

    def get_uint16(self, path: str) -> np.ndarray:
        arr = self._store.get(path)
        if arr is None:
            arr = self._store[path] = self._load(path)
        return arr

    def _load(self, path: str) -> np.ndarray:
        try:
            img = read_image(path)
            res = self.pipeline(img, keep_steps=False)
        except UnsupportedImageError as e:
            raise UnsupportedImageError(f"cannot read training image {path}: {e}") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"training image not found: {path}") from None
        d = np.clip(np.asarray(res.display, dtype=np.float32), 0.0, 1.0)
        return np.round(d * 65535.0).astype(np.uint16)

    def fill(self, paths: Sequence[str], progress: bool = True, desc: str = "decode") -> None:
        """Decode and cache every path not cached yet, with a progress bar."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._store]
        if not todo:
            return
        from tqdm.auto import tqdm

        for p in tqdm(todo, desc=desc, disable=not progress, leave=False, unit="img"):
            self._store[p] = self._load(p)


class ImageDataset(Dataset):
    """Labelled images through the model's pipeline, with optional augmentation.

    Items are ``(tensor (1, H, W) float32 normalised, label_index int)``.

    Args:
        df: Table from :func:`read_labels` (``path`` and ``label`` columns).
        pipeline: :class:`medcnn.preprocess.Pipeline` (the model card's).
        labels: Class names in logit order; a row label outside them is an error.
        augment: Optional callable ``(H, W) tensor -> (H, W) tensor`` in [0, 1]
            (:class:`medcnn.training.augment.Augment`).
        cache: Keep decoded display images in memory (a :class:`DisplayCache` may be
            passed to share it between datasets, e.g. folds).
        generator: Randomness for ``augment``.
        targets: Multi-label targets instead of ``label``: float (N, C) with 1 / 0 per finding and
            NaN where a finding is unknown for a row (``labels`` then names the C findings).

    Raises:
        ValueError: a label not in ``labels``, or ``targets`` of the wrong shape.
    """

    def __init__(self, df: pd.DataFrame, pipeline, labels: Sequence[str], augment=None,
                 cache: bool | DisplayCache = True, generator: torch.Generator | None = None,
                 targets: np.ndarray | None = None):
        self.df = df.reset_index(drop=True)
        self.pipeline = pipeline
        self.labels = [str(c) for c in labels]
        if targets is not None:
            targets = np.asarray(targets, dtype=np.float32)
            if targets.shape != (len(self.df), len(self.labels)):
                raise ValueError(f"multi-label targets must be (rows, findings) = "
                                 f"{(len(self.df), len(self.labels))}, got {targets.shape}")
            self.targets = targets
        else:
            unknown = sorted(set(self.df["label"]) - set(self.labels))
            if unknown:
                raise ValueError(f"label(s) {unknown} are not among the model's labels {self.labels}")
            index = {c: i for i, c in enumerate(self.labels)}
            self.targets = np.array(self.df["label"].map(index).to_numpy(dtype=np.int64))
        self.paths = self.df["path"].astype(str).tolist()
        self.augment = augment
        self.generator = generator
        if isinstance(cache, DisplayCache):
            self.cache: DisplayCache | None = cache
        else:
            self.cache = DisplayCache(pipeline) if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def display(self, i: int) -> np.ndarray:
        """Display image float32 (H, W) in [0, 1] of row ``i`` (not augmented)."""
        if self.cache is not None:
            return self.cache.get(self.paths[i])
        return DisplayCache(self.pipeline).get(self.paths[i])

    def display_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Stacked display images (N, H, W) float32 in [0, 1] (not augmented)."""
        if self.cache is not None:
            arr = np.stack([self.cache.get_uint16(self.paths[i]) for i in indices])
            return torch.from_numpy(arr.astype(np.float32)).mul_(1.0 / 65535.0)
        return torch.from_numpy(np.stack([self.display(i) for i in indices]))

    def tensor_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Model input (N, 1, H, W) float32 of rows ``indices`` (not augmented).

        This makes the dataset a :class:`medcnn.evaluation.predict.TensorBatches`, the input of
        :func:`medcnn.evaluation.predict.predict_dataset`.
        """
        return self.pipeline.to_tensor(self.display_batch(indices))

    def prefill(self, progress: bool = True) -> None:
        """Decode every image once (progress bar); later epochs read the cache."""
        if self.cache is not None:
            self.cache.fill(self.paths, progress=progress)

    @property
    def multilabel(self) -> bool:
        """True when targets are a (N, C) finding matrix rather than class indices."""
        return self.targets.ndim == 2

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        x = torch.from_numpy(self.display(i))
        if self.augment is not None:
            x = self.augment(x, self.generator)
        y = torch.from_numpy(self.targets[i].copy()) if self.multilabel else int(self.targets[i])
        return self.pipeline.to_tensor(x)[0], y


def label_counts(df: pd.DataFrame, by: str = "split") -> dict[str, dict[str, int]]:
    """``{split: {label: count}}`` (JSON-ready)."""
    out: dict[str, dict[str, int]] = {}
    for (s, lab), n in df.groupby([by, "label"]).size().items():
        out.setdefault(str(s), {})[str(lab)] = int(n)
    return out
