"""Shared types of image input: the decoded image, its non-identifying metadata, the one error.

Every reader in :mod:`medcnn.io` returns a :class:`MedImage` and raises
:class:`UnsupportedImageError`; the format modules import them from here (not from the package),
so there is no import cycle.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["UnsupportedImageError", "ImageMeta", "MedImage", "DEFAULT_MAX_PIXELS", "ACCEPTED", "INPUT_KINDS", "error"]

#: Default pixel budget (rows x columns x frames decoded) against decompression bombs.
DEFAULT_MAX_PIXELS = 64_000_000


class UnsupportedImageError(ValueError):
    """Raised for any input that cannot be read as a medical image.

    The message always says what was wrong and what is accepted.
    """


#: The kinds of input a model card can say something about (``ModelCard.caveats``), by
#: :attr:`ImageMeta.input_kind`.
INPUT_KINDS: dict[str, str] = {
    "hounsfield": "CT DICOM in Hounsfield units (a scanner slice)",
    "dicom": "other DICOM (a radiograph, or CT without Hounsfield units)",
    "picture": "a PNG or JPEG picture",
}


@dataclass
class ImageMeta:
    """Non-identifying metadata of one image. Never holds patient identifiers."""

    source_format: str  # "dicom" | "png" | "jpeg"
    rows: int
    columns: int
    modality: str = "OT"  # DICOM Modality; "OT" for PNG/JPEG
    photometric_interpretation: str = "MONOCHROME2"  # after colour -> grey conversion, the original is kept here
    bits_stored: int = 8
    pixel_representation: int = 0  # 0 unsigned, 1 signed
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    rescale_type: str | None = None  # e.g. "HU"
    window_center: float | None = None  # first window in the file (after Modality LUT units)
    window_width: float | None = None
    window_explanation: str | None = None
    voi_lut_function: str = "LINEAR"  # LINEAR | LINEAR_EXACT | SIGMOID
    # VOI LUT Sequence (PS3.3 C.11.2): (first_mapped_value, lut_data as float32 array, output bits)
    voi_lut: tuple[float, np.ndarray, int] | None = field(default=None, repr=False)
    pixel_spacing: tuple[float, float] | None = None  # mm (row, column)
    n_frames: int = 1
    frame: int = 0  # index of the frame returned
    body_part: str | None = None
    # Image Orientation (Patient) (0020,0037): row then column direction cosines in the patient's
    # LPS axes (6 floats), None when absent
    orientation: tuple[float, ...] | None = None
    view_position: str | None = None
    transfer_syntax: str | None = None  # name, for DICOM
    manufacturer: str | None = None
    # Patient's Age (0010,1010) in years, capped at 90 (HIPAA Safe Harbor); only for scope checks.
    age_years: float | None = None
    original_channels: int = 1  # 3/4 when a colour image was converted to grey
    warnings: list[str] = field(default_factory=list)

    @property
    def input_kind(self) -> str:
        """One of :data:`INPUT_KINDS`: ``"hounsfield"``, ``"dicom"`` or ``"picture"``."""
        if self.is_hounsfield:
            return "hounsfield"
        return "dicom" if self.source_format == "dicom" else "picture"

    @property
    def is_hounsfield(self) -> bool:
        """True for CT DICOM: after the Modality LUT its pixels are Hounsfield units, so CT
        window presets and level/width in HU apply. The one place this is decided."""
        return self.source_format == "dicom" and (self.modality or "").upper() == "CT"

    @property
    def size(self) -> tuple[int, int]:
        """(rows, columns)."""
        return (self.rows, self.columns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (the VOI LUT data is summarised, not included)."""
        d = asdict(self)
        lut = d.pop("voi_lut")
        d["has_voi_lut"] = lut is not None
        return d


@dataclass
class MedImage:
    """Decoded image: ``pixels`` float32 (H, W) modality values + ``meta``."""

    pixels: np.ndarray
    meta: ImageMeta


#: Appended to every error message: what the reader accepts.
ACCEPTED = "Accepted: DICOM (.dcm or no extension), PNG, JPEG."


def error(what: str) -> UnsupportedImageError:
    """Build the project's error with the 'what is accepted' sentence appended."""
    what = what.rstrip(". ")
    return UnsupportedImageError(f"{what}. {ACCEPTED}")
