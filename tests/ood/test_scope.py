"""Header scope checks: lateral view, wrong body part, children, colour, wrong modality."""
from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medcnn.inference import check_modality
from medcnn.io import ImageMeta, read_image
from medcnn.io.dicom import _age_years
from medcnn.models import ModelCard
from medcnn.ood import OODResult, check_scope, resolve_scope
from medcnn.preprocess import default_config

CXR = resolve_scope("CXR", None)


def dicom_meta(**fields) -> ImageMeta:
    meta = ImageMeta(source_format="dicom", rows=512, columns=512, modality="CR")
    for k, v in fields.items():
        setattr(meta, k, v)
    return meta


@pytest.mark.parametrize("fields, level, words", [
    ({}, "ok", None),
    ({"body_part": "CHEST", "view_position": "PA", "age_years": 45.0}, "ok", None),
    ({"view_position": "LL"}, "outside", "lateral film"),
    ({"view_position": "LATERAL"}, "outside", "lateral film"),
    ({"body_part": "KNEE"}, "outside", "body part is KNEE"),
    ({"body_part": "EXTREMITY"}, "outside", "chest, thorax, lung"),
    ({"age_years": 6.0}, "outside", "age as 6 years"),
    ({"photometric_interpretation": "RGB"}, "unusual", "colour"),
])
def test_cxr_header_checks(fields, level, words):
    result = check_scope(dicom_meta(**fields), CXR, OODResult())
    assert result.level == level
    if words:
        assert any(words in r for r in result.reasons), result.reasons
    else:
        assert result.reasons == []


def test_png_has_no_header_to_check():
    meta = ImageMeta(source_format="png", rows=10, columns=10, view_position="LL", age_years=3.0)
    assert check_scope(meta, CXR, OODResult()).level == "ok"


def test_ct_scope_has_no_view_or_age_rule_and_card_overrides_defaults():
    assert check_scope(dicom_meta(view_position="LL", age_years=4.0), resolve_scope("CT", None), OODResult()).level == "ok"
    custom = resolve_scope("CXR", {"min_age_years": None, "view_positions": ["PA", "AP", "LL"]})
    assert check_scope(dicom_meta(view_position="LL", age_years=4.0), custom, OODResult()).level == "ok"
    assert custom["body_parts"] == CXR["body_parts"]  # keys the card leaves out keep the default


@pytest.mark.parametrize("text, years", [("045Y", 45.0), ("006M", 0.5), ("052W", 52 / 52.1775), ("62", 62.0),
                                         ("095Y", 90.0), ("", None), ("abc", None), ("45", 45.0), ("012X", None)])
def test_age_string_parsing(text, years):
    got = _age_years(text)
    assert got == (pytest.approx(years) if years is not None else None)


def test_age_is_read_from_a_real_dicom_header():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientAge = "007Y"
    ds.BodyPartExamined = "CHEST"
    buf = io.BytesIO()
    ds.save_as(buf)
    meta = read_image(buf.getvalue()).meta
    assert meta.age_years == 7.0 and meta.body_part == "CHEST"
    assert check_scope(meta, CXR, OODResult()).level == "outside"


def test_wrong_modality_is_still_refused_outright():
    card = ModelCard(name="c", architecture="simplecnn", modality="CXR", labels=["N", "P"], positive_label="P",
                     input_size=(64, 64), preprocessing=default_config("CXR", 64), target_layer="block3",
                     dicom_modalities=["CR", "DX"])
    with pytest.raises(ValueError, match="accepts DICOM modalities CR, DX, but the image is MR"):
        check_modality(card, dicom_meta(modality="MR"))


CT = resolve_scope("CT", None)
RUN_OFF = {"top": 0.8, "bottom": 0.9, "left": 0.0, "right": 0.0}  # a coronal reformat's body
IN_FIELD = {"top": 0.0, "bottom": 0.6, "left": 0.3, "right": 0.3}  # an axial slice: air in front


def ct_meta(**fields) -> ImageMeta:
    return dicom_meta(**{"modality": "CT", **fields})


@pytest.mark.parametrize("meta, edges, level", [
    (ct_meta(), RUN_OFF, "outside"),  # no plane in the header: the image decides
    (ct_meta(orientation=(0.7071, 0.7071, 0.0, 0.0, 0.0, -1.0)), RUN_OFF, "outside"),  # 45 degrees oblique: no plane
    (ct_meta(), IN_FIELD, "ok"),
    (ct_meta(), {**RUN_OFF, "top": 0.19}, "ok"),  # below the rule's 0.2 on one edge
    (ct_meta(), None, "ok"),  # no body found to judge by: the image gate decides
    (ct_meta(orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)), RUN_OFF, "ok"),  # the header says axial
    (ImageMeta(source_format="png", rows=512, columns=512), RUN_OFF, "ok"),  # 8-bit crops touch every edge
    (ct_meta(modality="CR"), RUN_OFF, "ok"),  # not Hounsfield units
])
def test_a_ct_slice_without_a_plane_in_its_header_is_judged_by_where_the_body_meets_the_edges(meta, edges, level):
    body = None if edges is None else {"edges": edges}
    result = check_scope(meta, CT, OODResult(), body=body)
    assert result.level == level
    if level == "outside":
        assert any("runs off both the top and the bottom" in r and "axial slices only" in r for r in result.reasons)


def test_a_coronal_header_is_refused_by_the_header_not_the_image():
    result = check_scope(ct_meta(orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0)), CT, OODResult(), body={"edges": IN_FIELD})
    assert result.level == "outside" and len(result.reasons) == 1 and "coronal" in result.reasons[0]


def test_the_field_rule_is_not_applied_to_a_scope_that_reads_reformats():
    scope = resolve_scope("CT", {"planes": ["axial", "coronal"]})
    assert check_scope(ct_meta(), scope, OODResult(), body={"edges": RUN_OFF}).level == "ok"
