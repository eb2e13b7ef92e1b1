"""Fit the gate on a model's own data and measure it where it must say "not for me".

Measured sets (each a flag rate, recorded in the model card):

* in-distribution: the validation split (the thresholds come from it, so about 2.5% by
  construction) and the test split (never used: the honest false-flag rate);
* ``--check`` tables: other anatomy / modality, grouped by a column (e.g. ``category``);
* transformed films from the test split: rotated by 90 and 180 degrees, grey levels inverted;
* synthetic inputs: uniform noise, smooth noise, intensity ramps, blank frames, rendered text.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from medcnn.io import ImageMeta, MedImage, UnsupportedImageError, read_image

__all__ = ["TRANSFORMS", "SYNTHETIC", "acquisition_variants", "features_of", "flag_rates", "oriented_features",
           "verdicts_of", "read_table_images", "synthetic_images", "transformed"]


def _rotate(k: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda p: np.ascontiguousarray(np.rot90(p, k))


#: name -> pixel transform of an in-distribution image that the model must not read.
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rotated_90": _rotate(1),
    "rotated_180": _rotate(2),
    "inverted": lambda p: (p.max() + p.min() - p),
}


def transformed(images: Iterable[MedImage], name: str) -> list[MedImage]:
    """Apply ``TRANSFORMS[name]`` to each image's pixels (metadata kept, photometry unchanged)."""
    fn = TRANSFORMS[name]
    out = []
    for img in images:
        pixels = fn(img.pixels).astype(np.float32)
        meta = ImageMeta(**{**img.meta.__dict__, "rows": pixels.shape[0], "columns": pixels.shape[1],
                            "warnings": []})
        out.append(MedImage(pixels, meta))
    return out


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0, 255, (n, n))


def _smooth_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(rng.normal(128, 60, (n, n)), (0, 0), float(rng.uniform(4, 16)))


def _ramp(rng: np.random.Generator, n: int) -> np.ndarray:
    ramp = np.tile(np.linspace(0, 255, n), (n, 1))
    return np.rot90(ramp, int(rng.integers(4)))


def _blank(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.full((n, n), float(rng.uniform(0, 255)))


def _text(rng: np.random.Generator, n: int) -> np.ndarray:
    import cv2

    page = np.zeros((n, n), np.uint8)
    for line in range(n // 48):
        words = " ".join(f"w{int(v)}" for v in rng.integers(0, 999, 4))
        cv2.putText(page, f"REPORT {words}", (10, 40 + line * 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    return page.astype(np.float64)


#: name -> generator(rng, side) -> (side, side) float pixels in 0..255.
SYNTHETIC: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "noise": _noise, "smooth_noise": _smooth_noise, "ramp": _ramp, "blank": _blank, "text": _text,
}


def synthetic_images(name: str, n: int, seed: int = 0, side: int = 512) -> list[MedImage]:
    """``n`` synthetic 8-bit-range images of one kind (seeded)."""
    rng = np.random.default_rng(seed)
    fn = SYNTHETIC[name]
    return [MedImage(np.ascontiguousarray(fn(rng, side), dtype=np.float32), ImageMeta(source_format="png", rows=side, columns=side))
            for _ in range(n)]


def read_table_images(csv: str | Path, split: str | None = None, group: str | None = None,
                      limit: int | None = None) -> dict[str, list[MedImage]]:
    """Images of a ``labels.csv`` (paths relative to it), optionally one split, grouped by a column.

    Unreadable files are skipped with a warning (their count is in the message).

    Returns:
        group value -> images (one key, ``"all"``, when ``group`` is None).
    """
    import pandas as pd

    csv = Path(csv)
    table = pd.read_csv(csv)
    if split is not None:
        if "split" not in table:
            raise ValueError(f"{csv} has no 'split' column (asked for split {split!r})")
        table = table[table["split"] == split]
    if group is not None and group not in table:
        raise ValueError(f"{csv} has no column {group!r}; columns: {', '.join(table.columns)}")
    out: dict[str, list[MedImage]] = {}
    skipped = 0
    for key, rows in (table.groupby(group, sort=True) if group else [("all", table)]):
        images = []
        for rel in rows["path"].head(limit) if limit else rows["path"]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    images.append(read_image(csv.parent / rel))
            except (UnsupportedImageError, OSError):
                skipped += 1
        out[str(key)] = images
    if skipped:
        warnings.warn(f"{skipped} unreadable files in {csv} were skipped", stacklevel=2)
    return out


def flag_rates(verdicts: Sequence[Any]) -> dict[str, Any]:
    """Share of images flagged at either level, and not read (``"outside"``), with the count.

    For a two-question gate also ``kind_flagged`` (the kind question cautions or withholds) and
    ``style_flagged`` (the style question cautions).
    """
    n = len(verdicts)
    if n == 0:
        return {"n": 0, "flagged": None, "outside": None, "median_score": None}
    out = {"n": n, "flagged": round(sum(r.flagged for r in verdicts) / n, 4),
           "outside": round(sum(r.withheld for r in verdicts) / n, 4),
           "median_score": round(float(np.median([r.score for r in verdicts])), 3)}
    if all(getattr(r, "style", None) is not None for r in verdicts):
        out["kind_flagged"] = round(sum(r.kind.flagged for r in verdicts) / n, 4)
        out["style_flagged"] = round(sum(r.style.flagged for r in verdicts) / n, 4)
    return out


def acquisition_variants(images: Sequence[MedImage], copies: int, seed: int = 0) -> list[MedImage]:
    """``copies`` random acquisition variants of each image (:mod:`medcnn.ood.augment`), seeded."""
    from medcnn.ood.augment import acquisition_variant

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(copies):
        for img in images:
            p = acquisition_variant(img.pixels, rng)
            out.append(MedImage(p, ImageMeta(source_format="png", rows=p.shape[0], columns=p.shape[1])))
    return out


def verdicts_of(gate: Any, extract: Callable, pipeline: Callable, images: Sequence[MedImage],
                batch: int = 32) -> list[Any]:
    """The gate's full verdict on each image (image score + orientation diagnosis), as served: a
    slice its header turned upright is not asked its orientation (``Pipeline.upright_by_header``)."""
    import torch

    header = getattr(pipeline, "upright_by_header", None)
    out: list[Any] = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        x = torch.cat([pipeline(img, keep_steps=False).tensor for img in chunk])
        upright = [header(img.meta) for img in chunk] if header is not None else None
        out.extend(gate.judge(extract, x, upright=upright)[1])
    return out


def features_of(extract: Callable, pipeline: Callable, images: Sequence[MedImage],
                batch: int = 32) -> list[np.ndarray]:
    """Pooled gate features of ``images`` through the model's own pipeline (one array per layer)."""
    return oriented_features(extract, pipeline, images, batch, orientations=(0,))[0]


def oriented_features(extract: Callable, pipeline: Callable, images: Sequence[MedImage],
                      batch: int = 32, orientations: Sequence[int] | None = None) -> list[list[np.ndarray]]:
    """Pooled gate features of ``images`` turned to each of ``orientations`` (indices into
    :data:`medcnn.ood.orientation.ORIENTATIONS`, default all; one pipeline run per image, one
    forward pass per orientation): a list (orientations) of lists (layers) of arrays. Index 0 is
    upright.
    """
    import torch

    from medcnn.ood.orientation import ORIENTATIONS, reoriented

    turns = range(len(ORIENTATIONS)) if orientations is None else orientations
    chunks: list[list[list[np.ndarray]]] = [[] for _ in turns]
    for start in range(0, len(images), batch):
        x = torch.cat([pipeline(img, keep_steps=False).tensor for img in images[start:start + batch]])
        for per, k in zip(chunks, turns):
            per.append([f.numpy() for f in extract(reoriented(x, k))[1]])
    if not chunks[0]:
        raise ValueError("no readable images to compute features from")
    return [[np.concatenate([c[i] for c in per]) for i in range(len(per[0]))] for per in chunks]
