"""Labelled image sets: labels.csv files or class folders, grouped splits, cached datasets.

``labels.csv`` has at least ``path,label`` (paths relative to the CSV), usually
``split`` (train / val / test) and ``patient_id`` or ``group_id``; every other column is
kept (``view_position``, ``age``, ...). Several CSVs are concatenated, with a ``source``
column naming each CSV's folder.

Images are read with :func:`medcnn.io.read_image` and the model's
:class:`medcnn.preprocess.Pipeline` (the same code the app runs), and the resulting
display images (float32 [0, 1], model input size) are cached in memory as uint16, so an
epoch never decodes a DICOM/PNG twice.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medcnn.io import UnsupportedImageError, read_image

__all__ = [
    "DisplayCache",
    "ImageDataset",
    "IMAGE_SUFFIXES",
    "grouped_kfold",
    "grouped_split",
    "label_counts",
    "read_labels",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "dev": "val", "test": "test", "testing": "test"}
_STR_COLUMNS = ("path", "label", "split", "patient_id", "group_id")


# --------------------------------------------------------------------------- labels
def read_labels(
    csv_paths: str | Path | Sequence[str | Path],
    classes: Sequence[str] | None = None,
    split: str | Sequence[str] | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """Read one or more labels.csv files (or class-folder roots) into one table.

    Args:
        csv_paths: ``labels.csv`` path(s), or folder(s): a folder holding ``labels.csv``
            is read as that CSV; otherwise it is a class-folder root, either
            ``root/<label>/*.png`` (split ``train``) or ``root/<split>/<label>/*.png``.
        classes: Keep only rows with these labels (others are dropped). Every name
            must occur in the data.
        split: Keep only rows of this split (or these splits).
        check_files: Raise if an image file does not exist.

    Returns:
        DataFrame with ``path`` (absolute str), ``label`` (str), ``split`` (``train`` /
        ``val`` / ``test``), ``group`` (``patient_id``, else ``group_id``, else the path),
        ``source`` (folder name of each CSV) and every other CSV column; index 0..N-1.

    Raises:
        FileNotFoundError: a CSV, folder or image file does not exist.
        ValueError: missing ``path``/``label`` columns, an unknown split name, or a
            requested class absent from the data.
    """
    if isinstance(csv_paths, (str, Path)):
        csv_paths = [csv_paths]
    if not csv_paths:
        raise ValueError("no labels.csv or class folder given")
    frames = [_read_one(Path(p)) for p in csv_paths]
    df = pd.concat(frames, ignore_index=True, sort=False)
    if classes is not None:
        classes = [str(c) for c in classes]
        present = set(df["label"])
        missing = [c for c in classes if c not in present]
        if missing:
            raise ValueError(
                f"class(es) {missing} not found in the labels; available labels: "
                f"{', '.join(sorted(present))}"
            )
        df = df[df["label"].isin(classes)]
    if split is not None:
        wanted = [split] if isinstance(split, str) else list(split)
        wanted = [_SPLIT_ALIASES.get(str(s).lower(), str(s).lower()) for s in wanted]
        df = df[df["split"].isin(wanted)]
    df = df.reset_index(drop=True)
    if check_files:
        exists = df["path"].map(lambda p: Path(p).is_file())
        if not exists.all():
            bad = df.loc[~exists, "path"].tolist()
            raise FileNotFoundError(
                f"{len(bad)} image file(s) listed in the labels do not exist, e.g. {bad[:3]}"
            )
    return df


def _read_one(path: Path) -> pd.DataFrame:
    if path.is_dir():
        if (path / "labels.csv").is_file():
            path = path / "labels.csv"
        else:
            return _read_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    try:
        df = pd.read_csv(path, dtype={c: str for c in _STR_COLUMNS}, keep_default_na=False,
                         na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot parse {path} as CSV: {e}") from None
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; expected path,label[,split,patient_id|group_id]")
    if df["path"].isna().any() or df["label"].isna().any():
        raise ValueError(f"{path}: empty 'path' or 'label' in row(s) "
                         f"{(df.index[df['path'].isna() | df['label'].isna()] + 2).tolist()[:5]} (file lines)")
    root = path.parent.resolve()
    df["path"] = [str(p) if Path(p).is_absolute() else str(root / p) for p in df["path"]]
    return _finish(df, source=path.parent.resolve().name, origin=str(path))


def _read_folder(root: Path) -> pd.DataFrame:
    rows = []
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in _SPLIT_ALIASES]
    tops = [(d.name, d) for d in split_dirs] if split_dirs else [("train", root)]
    for split_name, top in tops:
        for label_dir in sorted(d for d in top.iterdir() if d.is_dir()):
            for f in sorted(label_dir.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    rows.append({"path": str(f.resolve()), "label": label_dir.name, "split": split_name})
    if not rows:
        raise FileNotFoundError(
            f"no labels.csv and no images in class folders under {root} "
            f"(expected {root}/<label>/*.png or {root}/<split>/<label>/*.png)"
        )
    return _finish(pd.DataFrame(rows), source=root.resolve().name, origin=str(root))


def _finish(df: pd.DataFrame, source: str, origin: str) -> pd.DataFrame:
    df["label"] = df["label"].astype(str).str.strip()
    if "split" not in df.columns:
        df["split"] = "train"
    df["split"] = df["split"].fillna("train").astype(str).str.strip().str.lower()
    # Other split names (e.g. nih_cxr_pneumonia's ``fullres_demo`` duplicates of test images)
    # are kept verbatim: never used for training, selectable with ``split=``.
    df["split"] = df["split"].map(lambda v: _SPLIT_ALIASES.get(v, v))
    if "group" in df.columns:
        df["group"] = df["group"].astype(str)
    elif "patient_id" in df.columns:
        df["group"] = df["patient_id"].fillna(df["path"]).astype(str)
    elif "group_id" in df.columns:
        df["group"] = df["group_id"].fillna(df["path"]).astype(str)
    else:
        df["group"] = df["path"]
    if "source" not in df.columns:
        df["source"] = source
    return df


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

    Raises:
        ValueError: a label not in ``labels``.
    """

    def __init__(self, df: pd.DataFrame, pipeline, labels: Sequence[str], augment=None,
                 cache: bool | DisplayCache = True, generator: torch.Generator | None = None):
        self.df = df.reset_index(drop=True)
        self.pipeline = pipeline
        self.labels = [str(c) for c in labels]
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

    def prefill(self, progress: bool = True) -> None:
        """Decode every image once (progress bar); later epochs read the cache."""
        if self.cache is not None:
            self.cache.fill(self.paths, progress=progress)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.display(i))
        if self.augment is not None:
            x = self.augment(x, self.generator)
        return self.pipeline.to_tensor(x)[0], int(self.targets[i])


def label_counts(df: pd.DataFrame, by: str = "split") -> dict[str, dict[str, int]]:
    """``{split: {label: count}}`` (JSON-ready)."""
    out: dict[str, dict[str, int]] = {}
    for (s, lab), n in df.groupby([by, "label"]).size().items():
        out.setdefault(str(s), {})[str(lab)] = int(n)
    return out
