"""VOI (value of interest) transforms: window/level, VOI LUT, presets, automatic windows.

Private helper of :mod:`medcnn.preprocess` (the only public place that windows pixels).
Implements PS3.3 C.11.2 (VOI LUT module) with the output normalised to [0, 1].
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from medcnn.io import ImageMeta

WindowSpec = str | tuple[float, float] | list[float] | dict[str, float] | None


#: CT window presets in Hounsfield units: name -> (centre, width).
CT_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (480.0, 2500.0),
    "brain": (40.0, 80.0),
    "abdomen": (60.0, 400.0),
}

def check_unit_range(x: np.ndarray, what: str = "image") -> None:
    """The pixel contract before normalisation: finite values in [0, 1].

    Raises:
        ValueError: naming the offending minimum / maximum.
    """
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(
            f"{what} must hold finite values in [0, 1] before normalisation; "
            f"got min={lo:.4g}, max={hi:.4g}"
        )


# --------------------------------------------------------------------------- VOI


def apply_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window/level to [0, 1] as in PS3.3 C.11.2.1.2 (output range normalised to [0, 1]).

    Args:
        x: modality values, float32 (H, W).
        center, width: window centre and width in the same units as ``x``.
        function: ``LINEAR`` (C.11.2.1.2.1), ``LINEAR_EXACT`` (C.11.2.1.3.2) or
            ``SIGMOID`` (C.11.2.1.3.1).

    Returns:
        float32 (H, W) in [0, 1].
    """
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        out = np.exp(np.float32(-4.0 / width) * (x - np.float32(center)))
        out += 1.0
        np.reciprocal(out, out=out)
        return out.astype(np.float32, copy=False)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        lo, span = center - width / 2.0, float(width)
    elif function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}")
        # y = ((x - (c - 0.5)) / (w - 1) + 0.5): the ramp runs from c-0.5-(w-1)/2 to c-0.5+(w-1)/2.
        lo, span = center - 0.5 - (width - 1) / 2.0, max(float(width) - 1.0, 1e-6)
    else:
        raise ValueError(f"unknown VOI LUT function {function!r}; accepted: LINEAR, LINEAR_EXACT, SIGMOID")
    out = np.subtract(x, np.float32(lo), order="C")  # C order: OpenCV needs a contiguous buffer
    out *= np.float32(1.0 / span)
    # Clip to [0, 1] with OpenCV's saturating thresholds (several times faster than np.clip).
    cv2.threshold(out, 1.0, 1.0, cv2.THRESH_TRUNC, dst=out)
    cv2.threshold(out, 0.0, 0.0, cv2.THRESH_TOZERO, dst=out)
    return out


def _apply_voi_lut(x: np.ndarray, voi_lut: tuple[float, np.ndarray, int]) -> np.ndarray:
    """VOI LUT Sequence (PS3.3 C.11.2.1.1): table look-up, output scaled to [0, 1]."""
    first, lut, bits = voi_lut
    lut = np.asarray(lut, dtype=np.float32)
    idx = np.clip(np.rint(x - np.float32(first)), 0, len(lut) - 1).astype(np.intp)
    top = float(2 ** int(bits) - 1) if bits else float(lut.max() or 1.0)
    top = top if top > 0 else 1.0
    return np.clip(lut[idx] / np.float32(top), 0.0, 1.0).astype(np.float32, copy=False)


def auto_window(x: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Robust automatic window from percentiles of (a subsample of) the pixels.

    Returns:
        (centre, width) with width >= 1e-6 (a constant image gets a unit width).
    """
    flat = x.reshape(-1)
    step = max(1, flat.size // 262_144)  # <= ~256k samples: exact enough, fast on 4k images
    lo, hi = np.percentile(flat[::step], [low, high])
    if hi - lo <= 0:
        lo, hi = float(flat.min()), float(flat.max())
    width = max(float(hi - lo), 1e-6)
    return (float(lo) + width / 2.0, width)


def resolve_window(meta: ImageMeta, pixels: np.ndarray, window: WindowSpec = "default",
                   ct_preset: str | None = None, preset_first: bool = False) -> dict[str, Any]:
    """Decide which VOI transform to apply and describe it as plain data.

    Args:
        meta: the image metadata (file window, VOI LUT, modality, bits).
        pixels: modality values (only read for ``auto``).
        window: ``"default"`` (file window, else file VOI LUT, else for CT DICOM
            ``ct_preset`` when given, else for PNG/JPEG the full stored range, else
            ``auto``), ``"file"``, ``"auto"``, a CT preset name, ``(centre, width)``
            or ``{"center": c, "width": w}``.
        ct_preset: preset used by ``default`` for CT DICOM (the CT model was trained
            on lung-windowed slices, so its pipeline sets ``"lung"``).
        preset_first: with ``default``, CT DICOM gets ``ct_preset`` even when the file has
            a window of its own (a scanner stores the window its slices are read in, often
            mediastinal 40/400, not the one a model was trained on).

    Returns:
        dict with ``source`` and either ``center``/``width``/``function`` or ``lut``.

    Raises:
        ValueError: unknown preset, a preset on an image without Hounsfield units,
            ``file`` on an image without a window, or a malformed window.
    """
    if window is None:
        window = "default"
    if isinstance(window, dict):
        window = (window.get("center"), window.get("width"))
    if isinstance(window, (tuple, list)):
        if len(window) != 2 or any(v is None for v in window):
            raise ValueError(f"a window must be (centre, width), got {window!r}")
        c, w = float(window[0]), float(window[1])
        if not (np.isfinite(c) and np.isfinite(w)) or w <= 0:
            raise ValueError(f"window width must be a finite number > 0, got centre={c}, width={w}")
        return {"source": "manual", "center": c, "width": w, "function": "LINEAR_EXACT"}
    if not isinstance(window, str):
        raise ValueError(f"window must be a name or (centre, width), got {type(window).__name__}")
    name = window.lower()
    has_file = meta.window_center is not None and meta.window_width is not None and meta.window_width > 0
    if name in CT_PRESETS:
        if not meta.is_hounsfield:
            raise ValueError(
                f"window preset {name!r} is in Hounsfield units and needs a CT DICOM; this image is "
                f"{meta.source_format.upper()} ({meta.modality}). Use 'default', 'auto' or (centre, width)."
            )
        c, w = CT_PRESETS[name]
        return {"source": f"preset:{name}", "center": c, "width": w, "function": "LINEAR"}
    if name == "file":
        if has_file:
            return {"source": "file", "center": float(meta.window_center), "width": float(meta.window_width),
                    "function": meta.voi_lut_function or "LINEAR"}
        if meta.voi_lut is not None:
            return {"source": "file:voi_lut", "lut": True}
        raise ValueError("this image has no window (Window Center/Width) or VOI LUT in its file; "
                         "use 'auto', a preset or (centre, width)")
    if name == "auto":
        c, w = auto_window(pixels)
        return {"source": "auto:percentile_0.5_99.5", "center": c, "width": w, "function": "LINEAR_EXACT"}
    if name == "default":
        if preset_first and ct_preset and meta.is_hounsfield:
            return resolve_window(meta, pixels, ct_preset)
        if has_file:
            return resolve_window(meta, pixels, "file")
        if meta.voi_lut is not None:
            return {"source": "file:voi_lut", "lut": True}
        if ct_preset and meta.is_hounsfield:
            return resolve_window(meta, pixels, ct_preset)
        if meta.source_format in ("png", "jpeg"):
            top = float(2 ** int(meta.bits_stored or 8) - 1)
            return {"source": "full_range", "center": top / 2.0, "width": top, "function": "LINEAR_EXACT"}
        return resolve_window(meta, pixels, "auto")
    raise ValueError(
        f"unknown window {window!r}; accepted: default, file, auto, {', '.join(CT_PRESETS)}, or (centre, width)"
    )
