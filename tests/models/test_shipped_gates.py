"""The shipped models' out-of-distribution gates: present, intact, and (with ../shared/data) meeting
the rates recorded in their cards on the real sets, through the serving path (Predictor)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medcnn.models import ModelCard

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
DATASET = {"cxr_pneumonia": "rsna_cxr_pneumonia", "cxr_findings": "rsna_cxr_pneumonia", "ct_covid": "sarscov2_ct"}
#: Out-of-distribution categories each family must NOT withhold as a whole: real chest CT slices in Hounsfield
#: units are what the CT pipeline brings to its training look (lung window, body crop).
READS = {"CT": {"chest_ct_dicom"}, "CXR": set()}


@pytest.fixture(params=sorted(DATASET), scope="module")
def card(request) -> ModelCard:
    return ModelCard.load(WEIGHTS / f"{request.param}.json")


def test_every_shipped_model_has_an_intact_gate(card):
    ood = card.ood
    assert ood.get("file") and card.ood_path.is_file(), f"{card.name} ships without a gate"
    assert hashlib.sha256(card.ood_path.read_bytes()).hexdigest() == ood["sha256"]
    assert card.ood_path.stat().st_size < 5 * 2**20
    assert 1.0 < ood["caution_threshold"] <= ood["refuse_threshold"]
    assert ood["fitted_on"]["split"] == "train" and ood["fitted_on"]["threshold_split"] == "val"
    test = next(r for name, r in ood["measured"]["in_distribution"].items() if name.endswith(" test"))
    assert test["flagged"] <= 0.05  # the target: <= 5% of its own test split flagged
    for name, r in ood["measured"]["outside"].items():
        if name.split("/")[-1] in READS[card.modality]:
            continue
        if name.startswith("ood_samples/") or name.startswith("synthetic") or "films" in name and "180" not in name:
            assert r["flagged"] >= 0.95, (card.name, name, r)


def _flag_rate(predictor, images) -> float:
    preds = [p for start in range(0, len(images), 32) for p in predictor.predict_batch(images[start:start + 32])]
    return sum(p.ood.flagged for p in preds) / len(preds)


def test_recorded_rates_hold_on_the_real_sets(card, shared_data):
    from medcnn.inference import Predictor
    from medcnn.ood.validate import read_table_images

    predictor = Predictor(card.path, device="cpu", check=False)  # the image gate alone, as fit-ood measures it
    test = read_table_images(shared_data / DATASET[card.name] / "labels.csv", "test")["all"]
    assert _flag_rate(predictor, test) <= 0.05
    for category, images in read_table_images(shared_data / "ood_samples" / "labels.csv", group="category").items():
        if category in READS[card.modality]:
            continue
        assert _flag_rate(predictor, images) >= 0.95, (card.name, category)
