"""The labelled table an audit runs on: labels.csv file(s) or a DataFrame, plus extra metadata.

Used by the dataset audit (:mod:`medcnn.audit`) and the saliency audit
(:mod:`medcnn.audit.saliency`). Files are read with :func:`medcnn.evaluation.labels.read_labels`;
unlike training, the audit tolerates rows whose split is not train / val / test (e.g. the
``fullres_demo`` duplicates), dropping them with a warning, and can merge a side CSV of
acquisition metadata.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medcnn.evaluation.labels import read_labels

__all__ = ["load_table"]


def load_table(data: pd.DataFrame | str | os.PathLike | Sequence[str | os.PathLike],
               classes: Sequence[str] | None = None, split: str | None = None,
               meta: str | os.PathLike | None = None) -> pd.DataFrame:
    """Labelled table for the audit: :func:`medcnn.evaluation.labels.read_labels` plus extra metadata.

    Rows with a split other than train / val / test (e.g. ``fullres_demo`` duplicates)
    are dropped with a warning instead of failing.

    Args:
        data: a DataFrame with ``path`` and ``label`` (and optionally ``group``), or
            labels.csv path(s) / class-folder root(s).
        classes: keep only these labels.
        split: keep only this split.
        meta: optional CSV with a ``path`` column (relative to that CSV, like labels.csv)
            whose other columns are merged in (e.g. ``view_positions.csv``).

    Raises:
        FileNotFoundError, ValueError: as :func:`medcnn.evaluation.labels.read_labels`.
    """
    if isinstance(data, pd.DataFrame):
        df = _from_frame(data, classes, split)
    else:
        paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        df = read_labels(paths, drop_other_splits=True)
        if classes is not None:
            missing = sorted(set(map(str, classes)) - set(df["label"]))
            if missing:
                raise ValueError(f"class(es) {missing} not in the labels; available: {sorted(set(df['label']))}")
            df = df[df["label"].isin([str(c) for c in classes])]
        if split is not None:
            df = df[df["split"] == split]
    if meta is not None:
        df = _merge_meta(df, meta)
    if df.empty:
        raise ValueError("no labelled images left after filtering by classes/split")
    return df.reset_index(drop=True)


def _from_frame(data: pd.DataFrame, classes: Sequence[str] | None, split: str | None) -> pd.DataFrame:
    """A caller's table: ``path`` and ``label`` required, ``group`` from the patient / group id or the path."""
    df = data.copy()
    for col in ("path", "label"):
        if col not in df.columns:
            raise ValueError(f"the table lacks the {col!r} column; expected path,label[,split,group]")
    df["label"] = df["label"].astype(str)
    if "group" not in df.columns:
        df["group"] = df.get("patient_id", df.get("group_id", df["path"])).astype(str)
    if classes is not None:
        df = df[df["label"].isin([str(c) for c in classes])]
    if split is not None and "split" in df.columns:
        df = df[df["split"] == split]
    return df


def _merge_meta(df: pd.DataFrame, meta: str | os.PathLike) -> pd.DataFrame:
    meta = Path(meta)
    if not meta.is_file():
        raise FileNotFoundError(f"metadata CSV not found: {meta}")
    extra = pd.read_csv(meta, dtype={"path": str}, keep_default_na=False, na_values=[""])
    if "path" not in extra.columns:
        raise ValueError(f"{meta} lacks a 'path' column to join on")
    root = meta.parent.resolve()
    extra["path"] = [str(p) if Path(p).is_absolute() else str(root / p) for p in extra["path"]]
    new = [c for c in extra.columns if c == "path" or c not in df.columns]
    return df.merge(extra[new], on="path", how="left")
