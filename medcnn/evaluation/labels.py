"""Labelled image sets: labels.csv files or class folders, read into one table.

``labels.csv`` has at least ``path,label`` (paths relative to the CSV), usually ``split``
(train / val / test) and ``patient_id`` or ``group_id``; every other column is kept
(``view_position``, ``age``, ...). Several CSVs are concatenated, with a ``source`` column
naming each CSV's folder. A class-folder root holds ``<label>/<image>`` or
``<split>/<label>/<image>``; which files are images is decided by their content
(:func:`medcnn.io.detect_format`), never by the file name, so an extension-less DICOM is
found and a ``.bmp`` (which :func:`medcnn.io.read_image` cannot read) is left out.

Training (:mod:`medcnn.training`), evaluation and the audits read their data through
:func:`read_labels`, so the split names, the patient groups and the image test are one policy.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medcnn.io import detect_format

__all__ = ["SPLIT_ALIASES", "STANDARD_SPLITS", "is_image_file", "read_labels"]

#: Split names accepted in labels.csv and as folder names -> the canonical name.
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
    "dev": "val", "test": "test", "testing": "test",
}
#: The canonical splits; rows of other splits (e.g. ``fullres_demo``) are never trained on.
STANDARD_SPLITS = ("train", "val", "test")
_STR_COLUMNS = ("path", "label", "split", "patient_id", "group_id")
# Bytes read to recognise a file: the DICOM preamble + "DICM" (132 bytes) and the first
# elements of a DICOM written without preamble fit comfortably.
_HEAD_BYTES = 4096


def is_image_file(path: str | Path) -> bool:
    """True when the file's first bytes are DICOM, PNG or JPEG (:func:`medcnn.io.detect_format`).

    A DICOM without preamble whose first element is longer than 4 KiB is not recognised
    (:func:`medcnn.io.read_image`, which sees the whole file, would read it).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    return detect_format(head) is not None


def read_labels(
    csv_paths: str | Path | Sequence[str | Path],
    classes: Sequence[str] | None = None,
    split: str | Sequence[str] | None = None,
    check_files: bool = True,
    drop_other_splits: bool = False,
) -> pd.DataFrame:
    """Read one or more labels.csv files (or class-folder roots) into one table.

    Args:
        csv_paths: ``labels.csv`` path(s), or folder(s): a folder holding ``labels.csv``
            is read as that CSV; otherwise it is a class-folder root, either
            ``root/<label>/<image>`` (split ``train``) or ``root/<split>/<label>/<image>``.
        classes: Keep only rows with these labels (others are dropped). Every name
            must occur in the data.
        split: Keep only rows of this split (or these splits).
        check_files: Raise if an image file does not exist.
        drop_other_splits: Drop rows whose split is not train / val / test (e.g. the
            ``fullres_demo`` duplicates of a test set), with a warning naming the CSV.
            By default they are kept verbatim: never trained on, selectable with ``split``.

    Returns:
        DataFrame with ``path`` (absolute str), ``label`` (str), ``split`` (``train`` /
        ``val`` / ``test`` or another name verbatim), ``group`` (``patient_id``, else
        ``group_id``, else the path), ``source`` (folder name of each CSV) and every other
        CSV column; index 0..N-1.

    Raises:
        FileNotFoundError: a CSV, folder or image file does not exist, or a class folder
            holds no image.
        ValueError: missing ``path``/``label`` columns, an unparsable CSV, or a requested
            class absent from the data.
    """
    if isinstance(csv_paths, (str, Path)):
        csv_paths = [csv_paths]
    if not csv_paths:
        raise ValueError("no labels.csv or class folder given")
    frames = [_read_one(Path(p)) for p in csv_paths]
    if drop_other_splits:
        frames = [_drop_other_splits(f, Path(p)) for f, p in zip(frames, csv_paths)]
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
        wanted = [SPLIT_ALIASES.get(str(s).lower(), str(s).lower()) for s in wanted]
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


def _drop_other_splits(df: pd.DataFrame, origin: Path) -> pd.DataFrame:
    ok = df["split"].isin(STANDARD_SPLITS)
    if not ok.all():
        warnings.warn(f"{origin}: skipping {int((~ok).sum())} row(s) with split "
                      f"{sorted(set(df.loc[~ok, 'split']))} (not train/val/test)", stacklevel=3)
    return df[ok]


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
    return _finish(df, source=path.parent.resolve().name)


def _read_folder(root: Path) -> pd.DataFrame:
    rows, skipped = [], []
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_ALIASES]
    tops = [(d.name, d) for d in split_dirs] if split_dirs else [("train", root)]
    for split_name, top in tops:
        for label_dir in sorted(d for d in top.iterdir() if d.is_dir()):
            for f in sorted(label_dir.rglob("*")):
                if not f.is_file() or f.name.startswith("."):
                    continue
                if is_image_file(f):
                    rows.append({"path": str(f.resolve()), "label": label_dir.name, "split": split_name})
                else:
                    skipped.append(f.relative_to(root).as_posix())
    if skipped:
        warnings.warn(f"{root}: skipping {len(skipped)} file(s) that are not DICOM, PNG or JPEG "
                      f"(by content), e.g. {skipped[:3]}", stacklevel=4)
    if not rows:
        raise FileNotFoundError(
            f"no labels.csv and no images in class folders under {root} "
            f"(expected {root}/<label>/<image> or {root}/<split>/<label>/<image>; "
            f"images are DICOM, PNG or JPEG)"
        )
    return _finish(pd.DataFrame(rows), source=root.resolve().name)


def _finish(df: pd.DataFrame, source: str) -> pd.DataFrame:
    df["label"] = df["label"].astype(str).str.strip()
    if "split" not in df.columns:
        df["split"] = "train"
    df["split"] = df["split"].fillna("train").astype(str).str.strip().str.lower()
    # Other split names (e.g. nih_cxr_pneumonia's ``fullres_demo`` duplicates of test images)
    # are kept verbatim: never used for training, selectable with ``split=``.
    df["split"] = df["split"].map(lambda v: SPLIT_ALIASES.get(v, v))
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
