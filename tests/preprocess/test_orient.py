"""The ``orient`` step: axial CT slices turned to the standard view from Image Orientation (Patient),
and the header check that refuses coronal / sagittal reformats.

Mis-read found on the real TCGA slices of ../shared/data/ct_hu: five prone and one decubitus scan
were read as stored, upside down or turned, so the network and the gate saw a turned chest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcnn.io import ImageMeta, read_image
from medcnn.ood.gate import OODResult
from medcnn.ood.scope import check_scope, resolve_scope
from medcnn.preprocess import STEPS, Orient, Pipeline, default_config
from medcnn.preprocess.orient import axial_transform, upright_by_header

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ct_hu"
SUPINE = (1, 0, 0, 0, 1, 0)
PRONE = (-1, 0, 0, 0, -1, 0)
DECUBITUS = (0, -1, 0, 1, 0, 0)  # rows run anterior, columns to the patient's left
CORONAL = (1, 0, 0, 0, 0, -1)
SAGITTAL = (0, 1, 0, 0, 0, -1)


def _meta(orientation):
    return ImageMeta(source_format="dicom", rows=3, columns=4, modality="CT", orientation=orientation)


def _marked() -> np.ndarray:
    """A 3 x 4 image whose every pixel is different, so each flip and turn is visible."""
    return np.arange(12, dtype=np.float32).reshape(3, 4) / 11


@pytest.mark.parametrize("orientation, expected", [
    (SUPINE, lambda x: x),
    (PRONE, lambda x: x[::-1, ::-1]),
    ((-1, 0, 0, 0, 1, 0), lambda x: x[:, ::-1]),  # feet first, supine: mirrored left-right
    (DECUBITUS, lambda x: x.T[::-1]),
    ((0.995, 0.0998, 0, -0.0998, 0.995, 0), lambda x: x),  # 5.7 degrees in plane: left as it is
    ((1, 0, 0, 0, 0.94, -0.342), lambda x: x),  # 20 degrees gantry tilt: still axial
])
def test_orient_turns_axial_slices_to_the_standard_view(orientation, expected):
    x = _marked()
    out, params = Orient().apply(x, _meta(orientation))
    assert np.array_equal(out, expected(x))
    assert np.array_equal(x, _marked())  # never in place
    assert out.flags["C_CONTIGUOUS"]


def test_the_standard_view_puts_the_patients_left_right_and_anterior_up():
    """Check the transform against patient coordinates, not against a hand-written flip."""
    for orientation in (SUPINE, PRONE, DECUBITUS, (0, 1, 0, -1, 0, 0), (-1, 0, 0, 0, 1, 0)):
        r, c = np.array(orientation[:3]), np.array(orientation[3:])
        rows, cols = np.mgrid[0:3, 0:4]
        pos = rows[..., None] * c + cols[..., None] * r  # LPS position of each stored pixel
        lps_x = Orient().apply(pos[..., 0].astype(np.float32), _meta(orientation))[0]
        lps_y = Orient().apply(pos[..., 1].astype(np.float32), _meta(orientation))[0]
        assert (np.diff(lps_x, axis=1) > 0).all(), orientation  # left -> right: towards the patient's left
        assert (np.diff(lps_y, axis=0) > 0).all(), orientation  # top -> bottom: anterior to posterior


@pytest.mark.parametrize("orientation, words", [
    (None, "no Image Orientation"), (CORONAL, "coronal"), (SAGITTAL, "sagittal"),
    ((0.7071, 0.7071, 0, -0.7071, 0.7071, 0), "oblique"),
])
def test_orient_leaves_other_slices_as_stored_and_says_why(orientation, words):
    x = _marked()
    out, params = Orient().apply(x, _meta(orientation))
    assert out is x and words in params["orientation"] and not params["transposed"]
    assert axial_transform(orientation)[0] is None


def test_orient_is_registered_and_in_the_ct_pipeline_only():
    assert STEPS["orient"] is Orient
    assert [s["name"] for s in default_config("CT", 64)["steps"]][:2] == ["window", "orient"]
    assert "orient" not in [s["name"] for s in default_config("CXR", 64)["steps"]]


@pytest.mark.parametrize("orientation, upright", [
    (SUPINE, True), (PRONE, True), (DECUBITUS, True), ((1, 0, 0, 0, 0.94, -0.342), True),
    (None, False), (CORONAL, False), (SAGITTAL, False), ((0.7071, 0.7071, 0, -0.7071, 0.7071, 0), False),
])
def test_only_an_axial_header_makes_a_ct_slice_upright_without_judging_its_pixels(orientation, upright):
    """The gate skips its orientation question for exactly these slices (the orient step fixed them)."""
    assert upright_by_header(_meta(orientation)) is upright
    ct = Pipeline.from_config(default_config("CT", 64))
    assert ct.upright_by_header(_meta(orientation)) is upright
    assert Pipeline.from_config(default_config("CXR", 64)).upright_by_header(_meta(orientation)) is False
    assert upright_by_header(None) is False


@pytest.mark.parametrize("orientation, refused", [(CORONAL, "coronal"), (SAGITTAL, "sagittal"), (SUPINE, None),
                                                  (PRONE, None), (None, None)])
def test_ct_scope_refuses_reformats_by_their_header(orientation, refused):
    result = check_scope(_meta(orientation), resolve_scope("CT", None), OODResult())
    if refused:
        assert result.level == "outside" and refused in " ".join(result.reasons)
        assert "reformat" in " ".join(result.reasons)
    else:
        assert result.level == "ok"
    # radiographs have no such rule
    assert check_scope(_meta(CORONAL), resolve_scope("CXR", None), OODResult()).level == "ok"


def test_real_prone_and_decubitus_slices_are_read_in_the_standard_view():
    files = {"TCGA-34-5231_ID_0092": "180", "TCGA-50-5044_ID_0052": "90"}
    pipe = Pipeline.from_config(default_config("CT", 64))
    for name, turn in files.items():
        path = DATA / "tcga" / f"{name}.dcm"
        if not path.exists():
            pytest.skip(f"{path} not found: real prone/decubitus slices live in ../shared/data (present in CI)")
        image = read_image(str(path))
        assert image.meta.orientation is not None
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert image.meta.orientation == pytest.approx(tuple(float(v) for v in ds.ImageOrientationPatient))
        step = pipe(image).steps[1]
        assert step.name == "orient" and f"turned by {turn} degrees" in step.params["orientation"]


def test_plane_of_each_orientation():
    from medcnn.preprocess.orient import plane

    assert [plane(o) for o in (SUPINE, PRONE, DECUBITUS, CORONAL, SAGITTAL, None)] == \
        ["axial", "axial", "axial", "coronal", "sagittal", None]
    assert plane((0.7071, 0.7071, 0, -0.7071, 0.7071, 0)) is None  # oblique
