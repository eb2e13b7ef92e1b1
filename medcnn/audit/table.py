"""The labelled table an audit runs on: labels.csv file(s) or a DataFrame, plus extra metadata.

Used by the dataset audit (:mod:`medcnn.audit`) and the saliency audit
(:mod:`medcnn.audit.saliency`). Unlike :func:`medcnn.training.data.read_labels` it tolerates rows
whose split is not train / val / test (e.g. the ``fullres_demo`` duplicates), dropping
them with a warning, and can merge a side CSV of acquisition metadata.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["load_table"]

_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
           "dev": "val", "test": "test", "testing": "test"}


def load_table(data: pd.DataFrame | str | os.PathLike | Sequence[str | os.PathLike],
               classes: Sequence[str] | None = None, split: str | None = None,
               meta: str | os.PathLike | None = None) -> pd.DataFrame:
    """Labelled table for the audit: :func:`medcnn.training.data.read_labels` plus extra metadata.

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
        FileNotFoundError, ValueError: as :func:`medcnn.training.data.read_labels`.
    """
    from medcnn.training.data import read_labels

    if isinstance(data, pd.DataFrame):
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
    else:
        paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        frames = [_read_tolerant(p, read_labels) for p in paths]
        df = pd.concat(frames, ignore_index=True, sort=False)
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


def _read_tolerant(path: str | os.PathLike, read_labels) -> pd.DataFrame:
    """:func:`read_labels`, but rows whose split is not train/val/test are dropped (warned)."""
    p = Path(path)
    csv = p / "labels.csv" if p.is_dir() and (p / "labels.csv").is_file() else p
    if not csv.is_file() or csv.suffix.lower() != ".csv":
        return read_labels(path)
    raw = pd.read_csv(csv, dtype={c: str for c in ("path", "label", "split", "patient_id", "group_id")},
                      keep_default_na=False, na_values=[""])
    if "split" not in raw.columns or "path" not in raw.columns or "label" not in raw.columns:
        return read_labels(path)
    split = raw["split"].fillna("train").astype(str).str.strip().str.lower()
    ok = split.isin(list(_SPLITS))
    if ok.all():
        return read_labels(path)
    warnings.warn(f"{csv}: skipping {int((~ok).sum())} row(s) with split {sorted(set(split[~ok]))} "
                  "(not train/val/test)", stacklevel=3)
    df = raw[ok].copy()
    root = csv.parent.resolve()
    df["path"] = [str(x) if Path(x).is_absolute() else str(root / x) for x in df["path"]]
    df["label"] = df["label"].astype(str).str.strip()
    df["split"] = split[ok].map(_SPLITS)
    ids = df.get("patient_id", df.get("group_id"))
    df["group"] = (ids.fillna(df["path"]) if ids is not None else df["path"]).astype(str)
    df["source"] = root.name
    missing = ~df["path"].map(lambda q: Path(q).is_file())
    if missing.any():
        raise FileNotFoundError(f"{int(missing.sum())} image file(s) listed in {csv} do not exist, "
                                f"e.g. {df.loc[missing, 'path'].tolist()[:3]}")
    return df.reset_index(drop=True)


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
