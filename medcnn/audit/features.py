"""Non-anatomical ("shortcut") features of an image file, for the dataset audit.

Each image gives one row of numbers that describe *how it was acquired and stored*, not
what it shows: file size and format, pixel grid, DICOM header fields, global intensity
statistics, the intensity of the border and of each corner, sharpness, and a heuristic
score for bright burned-in text in the margins. If a simple classifier predicts the
label from these numbers alone, the label is confounded with acquisition
(Zech et al. 2018, "Variable generalization performance of a deep learning model to
detect pneumonia in chest radiographs", PLoS Med 15(11):e1002683; DeGrave et al. 2021,
"AI for radiographic COVID-19 detection selects shortcuts over signal", Nat Mach Intell).

Features are computed from the raw file through :func:`medcnn.io.read_image` and
:func:`medcnn.preprocess.render` (what a viewer shows), on downscaled copies for speed:
intensity, border and corner statistics on a copy whose long side is 256 px, sharpness
on a fixed 256 x 256 resize, the text heuristic on a copy whose long side is 512 px.

Burned-in text heuristic (``text_top``, ``text_bottom``, ``text_left``, ``text_right``,
``text_margin``): in each margin band (12 % of the side), the fraction of pixels that
are *near-white* (>= 0.9, and above the image's own 99.5th percentile minus 0.02) *and*
sit on a strong edge (Sobel gradient magnitude >= 0.3 on the [0, 1] image). Letters
burned into radiographs ("L", "R", "PORTABLE", "AP", dates) are the brightest pixels of
the film and have sharp edges; smooth bright anatomy (shoulders, bone) has weak gradients
and rarely reaches the film's saturation level. The heuristic also fires on lead
markers, wires near the edge and saturated collimator edges; it measures "bright sharp
stuff in the margins", which is exactly the kind of shortcut a network may use.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from medcnn.notices import collected
from medcnn.io import MedImage, UnsupportedImageError, read_image
from medcnn.preprocess import render

__all__ = [
    "ACQUISITION_COLUMNS",
    "LABEL_DERIVED_COLUMNS",
    "FEATURE_GROUPS",
    "feature_group",
    "encode_features",
    "extract_features",
    "file_features",
    "image_features",
    "metadata_features",
]

#: CSV columns describing acquisition or storage (used as features when present).
ACQUISITION_COLUMNS: tuple[str, ...] = (
    "view_position", "nih_orig_width", "nih_orig_height", "orig_width", "orig_height",
    "width", "height", "mode", "orig_format", "modality", "manufacturer", "detector",
    "pixel_spacing", "bits_stored",
)
#: Columns that are never features: the label itself and anything derived from it,
#: identifiers and bookkeeping. (Features come from the allow-list above; this list is a
#: second guard and documents the decision.)
LABEL_DERIVED_COLUMNS: tuple[str, ...] = (
    "label", "rsna_class", "rsna_target", "rsna_boxes_1024", "finding_labels",
    "finding_labels_v2020", "nih2017_findings", "nih2017_pneumonia",
    "google2019_airspace_opacity", "path", "split", "patient_id", "group_id", "group",
    "source_file", "orig_name", "rsna_patient_id", "nih_image_index", "crossref_mse",
)

#: Feature-name prefix -> group (used to name "what carries the AUC").
FEATURE_GROUPS: dict[str, str] = {
    "width": "size", "height": "size", "aspect": "size", "megapixels": "size",
    "file_": "file", "format_": "format", "channels_": "format",
    "dicom_": "dicom", "int_": "intensity", "border_": "border", "corner_": "corner",
    "sharpness": "sharpness", "text_": "text", "meta_": "metadata",
}

_STAT_SIZE = 256  # long side of the copy used for intensity / border / corner statistics
_SHARP_SIZE = 256  # fixed square resize for sharpness
_TEXT_SIZE = 512  # long side of the copy used for the text heuristic
_BORDER = 0.05  # border frame width (fraction of each side)
_CORNER = 0.10  # corner square side (fraction of each side)
_TEXT_BAND = 0.12  # margin band for text (fraction of each side)
_MAX_LEVELS = 12  # one-hot levels kept per categorical feature (rest -> "other")


def feature_group(name: str) -> str:
    """Group of a feature name (``"corner_tl"`` -> ``"corner"``); ``"other"`` if unknown."""
    base = name.split("=", 1)[0]  # one-hot columns are "<field>=<value>"
    for prefix, group in FEATURE_GROUPS.items():
        if base == prefix.rstrip("_") or base.startswith(prefix):
            return group
    return "other"


def _downscale(x: np.ndarray, long_side: int) -> np.ndarray:
    h, w = x.shape
    s = long_side / max(h, w)
    if s >= 1.0:
        return np.ascontiguousarray(x, dtype=np.float32)
    size = (max(2, round(w * s)), max(2, round(h * s)))
    return cv2.resize(np.ascontiguousarray(x, dtype=np.float32), size, interpolation=cv2.INTER_AREA)


def _intensity(x: np.ndarray) -> dict[str, float]:
    v = x.ravel()
    mean, std = float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64))
    pct = np.percentile(v, [1, 5, 25, 50, 75, 95, 99, 99.5])
    z = (v - np.float32(mean)) * np.float32(1.0 / std) if std > 1e-8 else np.zeros_like(v)
    z2 = z * z
    out = {"int_mean": mean, "int_std": std}
    out.update({f"int_p{p:02d}": float(q) for p, q in zip((1, 5, 25, 50, 75, 95, 99), pct)})
    out["int_skew"] = float((z2 * z).mean(dtype=np.float64))
    out["int_kurtosis"] = float((z2 * z2).mean(dtype=np.float64) - 3.0)
    out["_p995"] = float(pct[-1])
    out["int_frac_black"] = float((v <= 0.02).mean())
    out["int_frac_white"] = float((v >= 0.98).mean())
    return out


def _border_corners(x: np.ndarray) -> dict[str, float]:
    h, w = x.shape
    bh, bw = max(1, round(h * _BORDER)), max(1, round(w * _BORDER))
    frame = np.ones_like(x, dtype=bool)
    frame[bh:h - bh, bw:w - bw] = False
    ch, cw = max(1, round(h * _CORNER)), max(1, round(w * _CORNER))
    centre = x[h // 4:h - h // 4, w // 4:w - w // 4]
    border = float(x[frame].mean())
    return {
        "border_mean": border,
        "border_std": float(x[frame].std()),
        "border_minus_centre": border - float(centre.mean()),
        "corner_tl": float(x[:ch, :cw].mean()),
        "corner_tr": float(x[:ch, w - cw:].mean()),
        "corner_bl": float(x[h - ch:, :cw].mean()),
        "corner_br": float(x[h - ch:, w - cw:].mean()),
    }


def _sharpness(x: np.ndarray) -> dict[str, float]:
    """Variance of the Laplacian (Pech-Pacheco et al. 2000) on a fixed 256 x 256 resize."""
    small = cv2.resize(np.ascontiguousarray(x, dtype=np.float32), (_SHARP_SIZE, _SHARP_SIZE),
                       interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(small, cv2.CV_32F, ksize=3)
    var = float(lap.var())
    return {"sharpness": var, "sharpness_log": math.log10(var + 1e-8)}


def _text_margins(x: np.ndarray, p995: float) -> dict[str, float]:
    """Fraction of bright, sharp-edged pixels in each margin band (module docstring)."""
    h, w = x.shape
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
    grad = np.sqrt(gx * gx + gy * gy) / 4.0  # Sobel 3x3 gain is 4 for a unit step
    level = max(0.9, p995 - 0.02)
    hits = (x >= level) & (grad >= 0.3)
    bh, bw = max(1, round(h * _TEXT_BAND)), max(1, round(w * _TEXT_BAND))
    bands = {"top": hits[:bh], "bottom": hits[h - bh:], "left": hits[:, :bw], "right": hits[:, w - bw:]}
    out = {f"text_{k}": float(v.mean()) for k, v in bands.items()}
    margin = np.zeros_like(hits)
    margin[:bh], margin[h - bh:], margin[:, :bw], margin[:, w - bw:] = True, True, True, True
    out["text_margin"] = float(hits[margin].mean())
    return out


def _dicom_fields(img: MedImage) -> dict[str, Any]:
    """Header fields of a DICOM (numbers, or strings for one-hot encoding later)."""
    m = img.meta
    if m.source_format != "dicom":
        return {}
    out: dict[str, Any] = {
        "dicom_modality": m.modality or "unknown",
        "dicom_manufacturer": (m.manufacturer or "unknown").strip() or "unknown",
        "dicom_bits_stored": float(m.bits_stored),
        "dicom_monochrome1": float(m.photometric_interpretation == "MONOCHROME1"),
    }
    if m.pixel_spacing:
        sy, sx = (float(v) for v in m.pixel_spacing)
        out.update(dicom_spacing_row=sy, dicom_spacing_col=sx,
                   dicom_detector_h_mm=sy * m.rows, dicom_detector_w_mm=sx * m.columns)
    return out


def file_features(path: str | os.PathLike, img: MedImage) -> dict[str, Any]:
    """Size, storage and header features of one decoded file.

    Returns:
        dict of numbers, plus string values (``format_``, ``channels_``, DICOM
        modality / manufacturer) that the audit one-hot encodes.
    """
    h, w = img.pixels.shape
    nbytes = Path(path).stat().st_size
    out: dict[str, Any] = {
        "width": float(w), "height": float(h), "aspect": w / h, "megapixels": w * h / 1e6,
        "file_bytes": float(nbytes), "file_bits_per_pixel": 8.0 * nbytes / (w * h),
        "format_": img.meta.source_format, "channels_": str(int(img.meta.original_channels)),
    }
    out.update(_dicom_fields(img))
    return out


def image_features(path: str | os.PathLike) -> dict[str, Any]:
    """All image-only features of one file (see the module docstring).

    Args:
        path: image file (DICOM, PNG or JPEG).

    Returns:
        dict feature name -> float (or str for categorical fields).

    Raises:
        UnsupportedImageError: the file cannot be decoded.
    """
    with collected():  # decode notes (colour -> grey, ...) are not audit results
        img = read_image(path)
        disp = render(img)
    feats = file_features(path, img)
    small = _downscale(disp, _STAT_SIZE)
    stats = _intensity(small)
    p995 = stats.pop("_p995")
    feats.update(stats)
    feats.update(_border_corners(small))
    feats.update(_sharpness(disp if max(disp.shape) <= 1024 else _downscale(disp, 1024)))
    feats.update(_text_margins(_downscale(disp, _TEXT_SIZE), p995))
    return feats


def metadata_features(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """CSV acquisition columns of one row as ``meta_<column>`` features (str or float)."""
    out: dict[str, Any] = {}
    for col in columns:
        v = row.get(col)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[f"meta_{col}"] = np.nan
            continue
        try:
            out[f"meta_{col}"] = float(v)
        except (TypeError, ValueError):
            out[f"meta_{col}"] = str(v).strip()
    return out


# --------------------------------------------------------------------------- features
def extract_features(df: pd.DataFrame, progress: bool = False) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Image-only features of every row (``path``), skipping unreadable files.

    Returns:
        (raw feature table, boolean (N,) mask of rows that decoded, error messages).
    """
    rows, ok, errors = [], np.ones(len(df), dtype=bool), []
    it = df["path"].tolist()
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="audit", unit="img", leave=False)
    for i, path in enumerate(it):
        try:
            rows.append(image_features(path))
        except (UnsupportedImageError, OSError) as e:
            ok[i] = False
            errors.append(str(e))
    return pd.DataFrame(rows), ok, errors


def encode_features(raw: pd.DataFrame) -> pd.DataFrame:
    """Numeric design matrix from raw features.

    Numbers stay float (NaN kept for the imputer); strings become one-hot columns
    ``name=value`` (the 12 most frequent values, the rest ``other``; a two-valued field
    keeps only its rarer value). Constant columns and exact duplicates (|r| > 0.9999
    with an earlier column, e.g. file bytes vs bits per pixel at a fixed size) are dropped.
    """
    cols: dict[str, pd.Series] = {}
    for name in raw.columns:
        s = raw[name]
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() >= s.notna().sum() and s.notna().any():
            cols[name] = num.astype(float)
            continue
        s = s.fillna("missing").astype(str)
        top = s.value_counts().index[:_MAX_LEVELS]
        s = s.where(s.isin(top), "other")
        base = name.rstrip("_")
        levels = sorted(s.unique())
        if len(levels) == 2:
            levels = [s.value_counts().index[-1]]
        for level in levels:
            cols[f"{base}={level}"] = (s == level).astype(float)
    out = pd.DataFrame(cols, index=raw.index)
    keep: list[str] = []
    for c in out.columns:
        v = out[c]
        if v.nunique(dropna=True) < 2:
            continue
        filled = v.fillna(v.median()).to_numpy()
        dup = False
        for k in keep:
            other = out[k].fillna(out[k].median()).to_numpy()
            if other.std() > 0 and filled.std() > 0 and abs(np.corrcoef(filled, other)[0, 1]) > 0.9999:
                dup = True
                break
        if not dup:
            keep.append(c)
    return out[keep]


