"""Header scope checks: does a DICOM's own header say it is outside what the model reads?

The model card declares what it accepts (``card.scope``; defaults per task family below). Each
check compares one DICOM attribute with it and, on a mismatch, escalates the gate's verdict with
a reason in words a clinician understands. A missing or empty attribute is never a mismatch
(many archives leave Body Part Examined or View Position empty). PNG/JPEG carry no header, so
only the image-based gate (:mod:`medcnn.ood.gate`) can judge them.

The plane has a second witness. A CT slice whose header gives no plane (the element stripped by
an export or an anonymiser, or an oblique cut) is judged by where the body meets the image edges
(the ``body_crop`` step's ``edges``, :func:`medcnn.preprocess.body.edge_contact`): a scanner's
axial field of view has air in front of the patient, so the body never runs off both the top and
the bottom of an axial slice, while a coronal or sagittal reformat is cut through the neck above
and the abdomen below. Measured on the opened foreground (``min(top, bottom)``): the 211 axial
HU slices of 47 patients in the shared data (every ``ct_hu`` slice and the 16 TCGA
``ood_samples``), header removed, at most 0.024 (top alone up to 0.50 where a large patient fills
the field; bottom up to 0.93 with the table); coronal reformats built from them 0.43-0.92,
sagittal 0.40-0.67 (``benchmarks/bench_ct_gate.py``). The level of 0.2 is a fixed rule, not
fitted. Only Hounsfield-unit DICOM is judged so: an 8-bit PNG or JPEG slice is often already
cropped to the body (the ``sarscov2_ct`` training slices are).

One check reads no header: an image whose shorter side is under half the network's input
(:func:`check_resolution`) is cautioned, whatever its format. Enlarging it more than two-fold to
the input size means the fine texture the network reads (ground glass, fine reticulation) is made
by interpolation, not seen. In the shared data that small are 23 of the 201 validation and test
figure crops from papers (``covid_ct``) and 2 of the 800 ``sarscov2_ct`` slices (127 and 120 px);
no chest film.

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

__all__ = ["DEFAULT_SCOPES", "MIN_RUN_OFF", "MIN_SIDE_FRACTION", "resolve_scope", "check_scope", "check_resolution"]

#: What each task family reads when its card declares nothing.
DEFAULT_SCOPES: dict[str, dict[str, Any]] = {
    "CXR": {"body_parts": ["CHEST", "THORAX", "LUNG"], "view_positions": ["PA", "AP"],
            "min_age_years": 18, "photometric": ["MONOCHROME1", "MONOCHROME2"]},
    "CT": {"body_parts": ["CHEST", "THORAX", "LUNG"], "view_positions": [],
           "min_age_years": None, "photometric": ["MONOCHROME1", "MONOCHROME2"], "planes": ["axial"]},
}
#: Share of both the top and the bottom image edge the body must cover for a CT slice without a
#: plane in its header to count as a reformat (axial slices reach 0.024 at most; see above).
MIN_RUN_OFF = 0.2
#: Least share of the network's input side an image's shorter side may have before its result is
#: cautioned (see above).
MIN_SIDE_FRACTION = 0.5
_LATERAL = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "XTABLE")


def resolve_scope(family: str, declared: dict[str, Any] | None) -> dict[str, Any]:
    """The card's declared scope over the family default (keys the card leaves out keep the default)."""
    scope = dict(DEFAULT_SCOPES.get(family.upper(), {}))
    scope.update(declared or {})
    return scope


def check_scope(meta: ImageMeta, scope: dict[str, Any], result: OODResult,
                body: dict[str, Any] | None = None) -> OODResult:
    """Escalate ``result`` for every header attribute outside ``scope``; returns ``result``.

    Args:
        meta: The image's metadata (:func:`medcnn.io.read_image`).
        scope: From :func:`resolve_scope`.
        result: The verdict to escalate (usually the image gate's).
        body: The ``body_crop`` step's parameters (``PipelineResult.params``), when the
            pipeline has that step: the plane of a CT slice whose header gives none is then
            judged from them (see the module docstring).
    """
    if meta.source_format != "dicom":
        return result
    part = (meta.body_part or "").strip().upper()
    parts = [p.upper() for p in scope.get("body_parts") or []]
    if part and parts and not any(p in part for p in parts):
        result.escalate("outside", (
            f"the DICOM header says the body part is {part}; this model reads only "
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
    elif planes == ["axial"] and found is None and meta.is_hounsfield:
        _check_axial_field((body or {}).get("edges"), result)
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


def _check_axial_field(edges: dict[str, float] | None, result: OODResult) -> None:
    """Withhold a header-less CT slice whose body runs off both the top and the bottom edge."""
    if not edges:
        return
    top, bottom = float(edges.get("top", 0.0)), float(edges.get("bottom", 0.0))
    if min(top, bottom) >= MIN_RUN_OFF:
        result.escalate("outside", (
            f"the body runs off both the top and the bottom of the image ({top:.0%} and {bottom:.0%} "
            "of those edges), as in a coronal or sagittal reformat or a cropped image; an axial "
            "slice from the scanner shows air in front of the patient. The header gives no plane, "
            "so the image decides: this model reads axial slices only"))


def check_resolution(shape: tuple[int, ...], input_size: tuple[int, int], result: OODResult) -> OODResult:
    """Caution a result whose image is smaller than half the network's input on its shorter side.

    Args:
        shape: The decoded image's ``(rows, columns)`` (``MedImage.pixels.shape``).
        input_size: The model's ``(height, width)`` input.
        result: The verdict to escalate; returned.
    """
    rows, cols = int(shape[0]), int(shape[1])
    side, need = max(min(rows, cols), 1), min(int(v) for v in input_size)
    if side < MIN_SIDE_FRACTION * need:
        result.escalate("unusual", (
            f"the image is only {cols} x {rows} pixels; the model reads {input_size[1]} x {input_size[0]}, "
            f"so the image was enlarged about {need / side:.0f}-fold and the fine texture the model reads comes "
            "from interpolation, not from the image: read the result with extra care (a full-size "
            "export or the DICOM file is better)"), question="style")
    return result
