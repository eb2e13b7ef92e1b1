"""Header scope checks: does a DICOM's own header say it is outside what the model reads?

The model card declares what it accepts (``card.scope``; defaults per task family below). Each
check compares one DICOM attribute with it and, on a mismatch, escalates the gate's verdict with
a reason in words a clinician understands. A missing or empty attribute is never a mismatch
(many archives leave Body Part Examined or View Position empty). PNG/JPEG carry no header, so
only the image-based gate (:mod:`medcnn.ood.gate`) can judge them.

Attributes (PS3.3): Body Part Examined (0018,0015, C.7.3.1), View Position (0018,5101, C.8.11.5),
Image Orientation (Patient) (0020,0037, C.7.6.2: a CT model reads axial slices, not reformats),
Photometric Interpretation (0028,0004, C.7.6.3), Patient's Age (0010,1010, C.7.2.1).
The Modality check that refuses outright stays in :func:`medcnn.inference.check_modality`.
"""
from __future__ import annotations

from typing import Any

from medcnn.io import ImageMeta
from medcnn.ood.gate import OODResult
from medcnn.preprocess.orient import plane

__all__ = ["DEFAULT_SCOPES", "resolve_scope", "check_scope"]

#: What each task family reads when its card declares nothing.
DEFAULT_SCOPES: dict[str, dict[str, Any]] = {
    "CXR": {"body_parts": ["CHEST", "THORAX", "LUNG"], "view_positions": ["PA", "AP"],
            "min_age_years": 18, "photometric": ["MONOCHROME1", "MONOCHROME2"]},
    "CT": {"body_parts": ["CHEST", "THORAX", "LUNG"], "view_positions": [],
           "min_age_years": None, "photometric": ["MONOCHROME1", "MONOCHROME2"], "planes": ["axial"]},
}
_LATERAL = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "XTABLE")


def resolve_scope(family: str, declared: dict[str, Any] | None) -> dict[str, Any]:
    """The card's declared scope over the family default (keys the card leaves out keep the default)."""
    scope = dict(DEFAULT_SCOPES.get(family.upper(), {}))
    scope.update(declared or {})
    return scope


def check_scope(meta: ImageMeta, scope: dict[str, Any], result: OODResult) -> OODResult:
    """Escalate ``result`` for every header attribute outside ``scope``; returns ``result``.

    Args:
        meta: The image's metadata (:func:`medcnn.io.read_image`).
        scope: From :func:`resolve_scope`.
        result: The verdict to escalate (usually the image gate's).
    """
    if meta.source_format != "dicom":
        return result
    body = (meta.body_part or "").strip().upper()
    parts = [p.upper() for p in scope.get("body_parts") or []]
    if body and parts and not any(p in body for p in parts):
        result.escalate("outside", (
            f"the DICOM header says the body part is {body}; this model reads only "
            f"{', '.join(parts).lower()} images"))
    view = (meta.view_position or "").strip().upper()
    views = [v.upper() for v in scope.get("view_positions") or []]
    if view and views and view not in views:
        kind = "a lateral film" if view in _LATERAL else f"view position {view}"
        result.escalate("outside", (
            f"the DICOM header says this is {kind}; this model reads only frontal "
            f"({'/'.join(views)}) films"))
    planes = scope.get("planes") or []
    found = plane(meta.orientation)
    if planes and found is not None and found not in planes:
        result.escalate("outside", (
            f"the DICOM header says this is a {found} image (Image Orientation (Patient)); this "
            f"model reads only {'/'.join(planes)} slices, not reformats"))
    min_age = scope.get("min_age_years")
    if min_age is not None and meta.age_years is not None and meta.age_years < float(min_age):
        result.escalate("outside", (
            f"the DICOM header gives the patient's age as {meta.age_years:.0f} years; this model "
            f"was made for patients aged {min_age:g} and over, and children's films differ "
            "(anatomy, positioning, disease patterns)"))
    photometric = [p.upper() for p in scope.get("photometric") or []]
    pi = (meta.photometric_interpretation or "").upper()
    if photometric and pi and pi not in photometric:
        result.escalate("unusual", (
            f"the image is stored as {pi} (colour); this model was trained on greyscale "
            "images, so the colour was converted to grey"), question="style")
    return result
