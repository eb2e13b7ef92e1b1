"""Turn an axial CT slice to the standard view: anterior at the top, the patient's left on the right.

A scanner stores each slice in the order of its acquisition. A supine patient's slice is stored in
the standard view (Image Orientation (Patient) rows along +x, columns along +y of the patient's
LPS axes), but a prone scan (biopsy, posterior lung disease) is stored turned by 180 degrees, a
decubitus scan by 90, and feet-first scans mirrored. Viewers show them as stored; a network
trained on supine slices reads them as upside-down or turned pictures, and the gate withholds
them. The ``orient`` step (:class:`Orient`, after ``window``) uses the header's direction cosines
to flip and turn the pixels into the standard view::

    row direction r, column direction c (unit vectors, LPS)
      -> each snapped to the nearest patient axis when within 30 degrees of it (gantry tilt and
         small obliquity stay as they are; nothing is resampled)
      -> both in the axial (x, y) plane? else the slice is not axial: unchanged, noted
      -> transpose when the rows run along y; flip columns when the rows run to the patient's
         right (-x); flip rows when the columns run anterior (-y)

An image without the header (PNG, JPEG, a DICOM without the element) is left as it is: its view
is judged by the image alone (the out-of-distribution gate's turned and flipped variants).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medcnn.io import ImageMeta
from medcnn.preprocess.base import Step

__all__ = ["Orient", "axial_transform", "plane", "upright_by_header"]

#: Largest angle between a direction cosine and a patient axis for it to count as that axis.
_MAX_DEGREES = 30.0


def _snap(v: np.ndarray) -> tuple[int, int] | None:
    """(axis index, sign) of the patient axis ``v`` points along, None when none is close."""
    norm = float(np.linalg.norm(v))
    if norm == 0:
        return None
    v = v / norm
    axis = int(np.argmax(np.abs(v)))
    if abs(v[axis]) < np.cos(np.radians(_MAX_DEGREES)):
        return None
    return axis, int(np.sign(v[axis]))


def _snapped(orientation: tuple[float, ...]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The row and column directions snapped to patient axes, None when oblique."""
    r, c = _snap(np.asarray(orientation[:3], float)), _snap(np.asarray(orientation[3:], float))
    return None if r is None or c is None or r[0] == c[0] else (r, c)


def plane(orientation: tuple[float, ...] | None) -> str | None:
    """``"axial"``, ``"coronal"`` or ``"sagittal"``: the plane Image Orientation (Patient) gives
    (each direction within 30 degrees of a patient axis); None when absent or oblique."""
    snapped = _snapped(orientation) if orientation is not None else None
    if snapped is None:
        return None
    normal = ({0, 1, 2} - {snapped[0][0], snapped[1][0]}).pop()
    return ("sagittal", "coronal", "axial")[normal]


def axial_transform(orientation: tuple[float, ...] | None) -> tuple[tuple[bool, bool, bool] | None, str]:
    """How to bring a slice of this orientation to the standard axial view.

    Args:
        orientation: Image Orientation (Patient), 6 floats, or None.

    Returns:
        ``(transform, text)``: transform ``(transpose, flip_rows, flip_columns)`` applied in that
        order, or None when the slice is left as stored; text says what was found and done.
    """
    if orientation is None:
        return None, "no Image Orientation (Patient): shown as stored"
    found = plane(orientation)
    if found is None:
        return None, "oblique Image Orientation (Patient): shown as stored"
    if found != "axial":
        return None, f"not an axial slice (Image Orientation (Patient) gives a {found} plane): shown as stored"
    r, c = _snapped(orientation)  # type: ignore[misc]
    transpose = r[0] == 1  # the rows run along y: swap so that they run along x
    row_sign, col_sign = (c[1], r[1]) if transpose else (r[1], c[1])
    flip_columns, flip_rows = row_sign < 0, col_sign < 0
    if not (transpose or flip_rows or flip_columns):
        return (False, False, False), "axial, standard view"
    if transpose:
        text = ("turned by 90 degrees (as a decubitus scan is stored)" if flip_rows != flip_columns
                else "turned by 90 degrees and mirrored")
    else:
        text = {(True, True): "turned by 180 degrees (as a prone scan is stored)",
                (False, True): "mirrored left-right", (True, False): "mirrored top-bottom"}[(flip_rows, flip_columns)]
    return (transpose, flip_rows, flip_columns), f"axial, stored {text}: turned to the standard view"


def upright_by_header(meta: ImageMeta | None) -> bool:
    """True when the header's Image Orientation (Patient) gives an axial slice, which :class:`Orient`
    turns to the standard view exactly: its view needs no judging from the pixels."""
    return meta is not None and axial_transform(meta.orientation)[0] is not None


class Orient(Step):
    """Bring an axial CT slice to the standard view from its header (see the module docstring).

    Exact (flips and a transpose, no resampling); the input is never modified.
    """

    name = "orient"

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Returns the image in the standard view and ``{orientation, transposed, flipped_rows,
        flipped_columns}`` (``orientation`` is the text of :func:`axial_transform`)."""
        transform, text = axial_transform(meta.orientation if meta is not None else None)
        transpose, flip_rows, flip_columns = transform or (False, False, False)
        out = x.T if transpose else x
        if flip_rows:
            out = out[::-1]
        if flip_columns:
            out = out[:, ::-1]
        if out is not x:
            out = np.ascontiguousarray(out)
        return out, {"orientation": text, "transposed": transpose, "flipped_rows": flip_rows,
                     "flipped_columns": flip_columns}
