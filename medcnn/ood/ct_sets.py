"""CT check sets built from real axial slices: reformats, and slices without their header.

The CT gate must refuse coronal and sagittal reformats and judge a slice by its pixels when the
header says nothing. No reformat of a real scan is in the shared data, so :func:`reformat` builds
one from a patient's axial slices, as a scanner console does (multiplanar reformation: the
volume is cut along another plane and resampled to square pixels). With the ~8 mm spacing of the
shared slices the reformat is coarser along the body's long axis than a console's (0.6-2 mm);
the anatomy (both lungs' full height, diaphragm, heart, spine or sternum) is the real one.
:func:`without_header` removes what the header says about the body part and the plane, so the
image alone carries the verdict. Only measurement and tests use these: nothing is fitted on them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from medcnn.io import ImageMeta, MedImage

__all__ = ["PLANES", "reformat", "without_header"]

#: plane -> Image Orientation (Patient) of its reformat (rows along the first axis given, columns
#: from head to feet), as a console writes it.
PLANES: dict[str, tuple[float, ...]] = {
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
}


def without_header(image: MedImage) -> MedImage:
    """The same pixels with no Body Part Examined and no Image Orientation (Patient)."""
    return MedImage(image.pixels, replace(image.meta, body_part=None, orientation=None, warnings=[]))


def reformat(slices: Sequence[MedImage], z_mm: Sequence[float], plane: str, at: float = 0.5) -> MedImage:
    """A coronal or sagittal image through a stack of axial slices of one patient.

    Args:
        slices: Axial slices in the standard view (supine), all of one shape, HU pixels.
        z_mm: Each slice's position along the body axis in mm (Image Position (Patient) z;
            larger is nearer the head).
        plane: ``"coronal"`` (front to back cut at ``at`` of the height) or ``"sagittal"``
            (left to right cut at ``at`` of the width).
        at: Where the cut lies, as a fraction of the slice's height (coronal) or width (sagittal).

    Returns:
        The reformat, head at the top, pixels square at the slices' in-plane spacing, with the
        first slice's metadata, the plane's Image Orientation (Patient) and no Body Part Examined.

    Raises:
        ValueError: fewer than 3 slices, shapes that differ, an unknown plane or ``at`` outside (0, 1).
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    if len(slices) < 3 or len(slices) != len(z_mm):
        raise ValueError(f"need at least 3 slices, each with a position; got {len(slices)} and {len(z_mm)}")
    if len({s.pixels.shape for s in slices}) != 1:
        raise ValueError("the slices differ in shape: not one series")
    if not 0 < at < 1:
        raise ValueError(f"at must be a fraction in (0, 1), got {at}")
    order = np.argsort(-np.asarray(z_mm, float))  # head first
    z = np.asarray(z_mm, float)[order]
    volume = np.stack([slices[i].pixels for i in order]).astype(np.float32)  # (Z, H, W)
    h, w = volume.shape[1:]
    cut = volume[:, int(at * h), :] if plane == "coronal" else volume[:, :, int(at * w)]
    spacing = slices[0].meta.pixel_spacing or (1.0, 1.0)
    in_plane = float(spacing[1] if plane == "coronal" else spacing[0])
    rows = max(3, int(round((z[0] - z[-1]) / in_plane)) + 1)
    # resample the long axis to square pixels (linear between slices, as a console does)
    grid = np.linspace(z[0], z[-1], rows)
    image = np.stack([np.interp(-grid, -z, cut[:, j]) for j in range(cut.shape[1])], axis=1).astype(np.float32)
    meta: ImageMeta = replace(slices[0].meta, rows=image.shape[0], columns=image.shape[1], body_part=None,
                              orientation=PLANES[plane], pixel_spacing=(in_plane, in_plane), warnings=[])
    return MedImage(np.ascontiguousarray(image), meta)

