"""The shipped default weights: they load, their cards are complete, and (with ../shared/data)
they reproduce the test metrics written in their cards."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medcnn.models.card import ModelCard
from medcnn.models import load_model

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SHIPPED = {
    "cxr_pneumonia": {"modality": "CXR", "dataset": "rsna_cxr_pneumonia", "labels": ["NORMAL", "PNEUMONIA"]},
    "ct_covid": {"modality": "CT", "dataset": "sarscov2_ct", "labels": ["NonCOVID", "COVID"]},
}


@pytest.fixture(params=sorted(SHIPPED))
def shipped(request):
    name = request.param
    card_path = WEIGHTS / f"{name}.json"
    if not card_path.is_file():
        pytest.fail(f"shipped model card missing: {card_path}")
    return name, card_path


def test_card_is_complete_and_weights_small(shipped):
    name, card_path = shipped
    card = ModelCard.load(card_path)
    spec = SHIPPED[name]
    assert card.name == name and card.modality == spec["modality"] and card.labels == spec["labels"]
    assert card.weights_path.is_file() and card.weights_path.stat().st_size < 50 * 1024 * 1024
    assert 0.0 < card.threshold < 1.0 and card.temperature > 0
    for key in ("command", "git_commit", "date", "split_counts", "sources"):
        assert card.training.get(key), f"card.training lacks {key}"
    assert spec["dataset"] in json.dumps(card.training["data"])
    for split in ("val", "test"):
        m = card.metrics[split]
        assert 0.5 < m["auc"] <= 1.0 and m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
    assert card.intended_use and len(card.limitations) >= 3 and card.experiments


def test_stored_scores_reproduce_the_card_metrics(shipped):
    """The per-image scores behind the Model card page's curves agree with the card's own
    AUC, counts and confusion matrix (no data needed)."""
    import numpy as np

    from medcnn.evaluation.evaluate import compute_metrics

    card = ModelCard.load(shipped[1])
    for split in ("val", "test"):
        m, stored = card.metrics[split], card.metrics[split]["scores"]
        y, p = np.asarray(stored["y"]), np.asarray(stored["prob"])
        assert len(y) == m["n"] and int(y.sum()) == m["n_pos"]
        again = compute_metrics(y, p, card.threshold, n_boot=0)
        assert again["auc"] == pytest.approx(m["auc"], abs=1e-4)
        assert again["confusion_matrix"] == m["confusion_matrix"]


def test_weights_load_with_weights_only_and_predict(shipped):
    _, card_path = shipped
    model, card = load_model(card_path, device="cpu")
    state = torch.load(card.weights_path, map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    x = torch.zeros(2, 1, *card.input_size)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, len(card.labels)) and torch.isfinite(out).all()


def test_card_test_auc_is_reproduced(shipped, shared_data):
    from medcnn.evaluation.evaluate import evaluate_model

    name, card_path = shipped
    card = ModelCard.load(card_path)
    csv = shared_data / SHIPPED[name]["dataset"] / "labels.csv"
    result = evaluate_model(card_path, [csv], split="test", n_boot=0, classes=card.labels)
    assert result["n"] == card.metrics["test"]["n"]
    assert result["auc"] == pytest.approx(card.metrics["test"]["auc"], abs=0.01)


def test_gradcam_on_the_shipped_cxr_model_depends_on_its_weights(shared_data):
    """Model-randomisation sanity check (Adebayo et al. 2018) on the shipped chest X-ray model."""
    import pandas as pd

    from medcnn.inference import Predictor
    from medcnn.io import read_image
    from medcnn.explain.sanity import randomisation_test

    card_path = WEIGHTS / "cxr_pneumonia.json"
    folder = shared_data / "rsna_cxr_pneumonia"
    rows = pd.read_csv(folder / "labels.csv")
    row = rows[(rows["split"] == "test") & (rows["label"] == "PNEUMONIA")].iloc[0]
    predictor = Predictor(card_path, device="cpu")
    x = predictor.predict(read_image(folder / row["path"])).pipeline_result.tensor
    result = randomisation_test(predictor.model, x, predictor.card.positive_index, "gradcam",
                                layer=predictor.card.target_layer)
    assert result["passes"], result
