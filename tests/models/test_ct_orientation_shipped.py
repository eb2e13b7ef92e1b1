"""The shipped CT gate's orientation question on real scanner slices (../shared/data/ct_hu).

Mis-read fixed: a header-less CT slice turned by 180 degrees was read as upright 92% of the time.
The shipped gate now judges the orientation of a slice without an orientation header by its pixels,
and leaves a slice whose Image Orientation (Patient) turned it upright (the ``orient`` step) alone.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcnn.io import MedImage, read_image

REPO = Path(__file__).resolve().parents[2]
CT_HU = REPO.parent / "shared" / "data" / "ct_hu"


@pytest.fixture(scope="module")
def slices():
    if not (CT_HU / "labels.csv").is_file():
        pytest.skip(f"needs the real CT DICOM of {CT_HU} (shared data absent)")
    from medcnn.inference import Predictor

    table = pd.read_csv(CT_HU / "labels.csv")
    rows = table[(table["split"] == "test") & (table["source"] == "COVID-CT-MD")]
    images = [read_image(CT_HU / p) for p in rows["path"]]
    return Predictor(REPO / "weights" / "ct_covid.json", device="cpu"), images


def _headerless(image: MedImage, turn: int) -> MedImage:
    """The slice as a PNG export would carry it: no orientation header, pixels turned ``turn`` x 90 degrees."""
    return MedImage(np.ascontiguousarray(np.rot90(image.pixels, turn)), replace(image.meta, orientation=None))


def _turned(verdicts) -> float:
    return float(np.mean([any("upside down" in r or "rotated" in r for r in v.ood.reasons) for v in verdicts]))


def test_scanner_slices_with_their_header_are_not_asked_their_orientation(slices):
    predictor, images = slices
    assert all(predictor.pipeline.upright_by_header(img.meta) for img in images)
    preds = predictor.predict_batch(images)
    assert _turned(preds) == 0.0
    assert np.mean([p.ood.withheld for p in preds]) <= 0.10  # the hidden-slices target


def test_a_headerless_slice_turned_upside_down_is_withheld_by_its_pixels(slices):
    predictor, images = slices
    upright = predictor.predict_batch([_headerless(img, 0) for img in images])
    turned = predictor.predict_batch([_headerless(img, 2) for img in images])
    assert np.mean([p.ood.withheld for p in upright]) <= 0.15
    assert np.mean([p.ood.withheld for p in turned]) >= 0.5
    assert _turned(turned) >= 0.5 and any("upside down" in " ".join(p.ood.reasons) for p in turned)


@pytest.fixture(scope="module")
def reformats(slices):
    """Coronal and sagittal reformats of the COVID-CT-MD test patients (medcnn.ood.ct_sets)."""
    import pydicom

    from medcnn.ood.ct_sets import reformat

    table = pd.read_csv(CT_HU / "labels.csv")
    rows = table[(table["split"] == "test") & (table["source"] == "COVID-CT-MD")]
    out = []
    for _, patient in rows.groupby("patient_id"):
        paths = [CT_HU / p for p in patient["path"]]
        z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths]
        images = [read_image(p) for p in paths]
        out += [reformat(images, z, plane, at) for plane, at in (("coronal", 0.5), ("sagittal", 0.3), ("sagittal", 0.7))]
    return out


def test_a_headerless_reformat_is_withheld_by_where_the_body_meets_the_edges(slices, reformats):
    """Mis-read fixed: with its Image Orientation (Patient) removed, every coronal reformat was
    analysed with no message (the gate sees only the body crop, which looks like an axial slice)."""
    from medcnn.ood.ct_sets import without_header

    predictor, images = slices
    preds = predictor.predict_batch([without_header(r) for r in reformats])
    assert all(p.ood.withheld for p in preds)
    assert all(any("runs off both the top and the bottom" in r for r in p.ood.reasons) for p in preds)
    axial = predictor.predict_batch([_headerless(img, 0) for img in images])
    assert not any("runs off" in r for p in axial for r in p.ood.reasons)  # no axial slice is taken for one
