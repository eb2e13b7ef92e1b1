"""The shipped CT model on real scanner DICOM: the image alone carries the gate's verdict, and the
card's held-out ct_hu metrics are reproduced from its stored scores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcnn.inference import Predictor
from medcnn.io import read_image
from medcnn.models.card import ModelCard
from medcnn.ood.ct_sets import without_header

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "weights" / "ct_covid.json"
DATA = REPO.parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: real CT DICOM lives in ../shared/data (present in CI)")
    return path


def test_a_header_less_hu_slice_is_judged_by_its_image():
    slices = [_need(DATA / "ct_hu" / "covid_ct_md" / name) for name in ("P002_s054.dcm", "cap002_s053.dcm")]
    predictor = Predictor(CARD)
    for path in slices:
        image = read_image(str(path))
        with_header, bare = predictor.predict(image), predictor.predict(without_header(image))
        assert bare.ood.level == with_header.ood.level == "ok"
        assert bare.positive_prob == pytest.approx(with_header.positive_prob, abs=1e-6)
    # the same pixels turned by 90 degrees with no header to say so: the image alone refuses them
    turned = without_header(image)
    turned.pixels = np.ascontiguousarray(np.rot90(turned.pixels))
    assert predictor.predict(turned).ood.withheld


def test_card_stores_held_out_scanner_metrics_that_its_scores_reproduce():
    from medcnn.evaluation.evaluate import compute_metrics

    card = ModelCard.load(CARD)
    m = card.metrics["ct_hu_test"]
    y, p = np.asarray(m["scores"]["y"]), np.asarray(m["scores"]["prob"])
    assert len(y) == m["n"] == 82 and int(y.sum()) == 25
    again = compute_metrics(y, p, card.threshold, n_boot=0)
    assert again["auc"] == pytest.approx(m["auc"], abs=1e-4)
    assert card.wording["NonCOVID"].startswith("No COVID-19 pattern") and "slice" in card.wording["NonCOVID"]
