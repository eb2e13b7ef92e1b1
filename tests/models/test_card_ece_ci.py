"""The shipped chest X-ray cards' ECE intervals: basic bootstrap intervals that contain their estimates.

Before, two entries of cxr_findings had an ECE outside its own (percentile) interval: validation Edema
and test Atelectasis on PA films. The intervals were recomputed from the same resamples (same seed,
same patients) with :func:`medcnn.evaluation.bootstrap.basic_ci`; nothing else in the cards changed.
No data needed: the findings card stores each image's outcome, probability and anonymous patient rank.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcnn.evaluation.bootstrap import basic_ci, resample_indices
from medcnn.evaluation.metrics import BIASED_METRICS, expected_calibration_error
from medcnn.models.card import ModelCard

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
CARDS = ("cxr_pneumonia", "cxr_findings")


def _metric_entries(node, path=""):
    """(path, metrics dict) of every stored metrics dict with an ECE interval."""
    if isinstance(node, dict):
        if isinstance(node.get("ci"), dict) and "ece" in node["ci"]:
            yield path, node
        for key, value in node.items():
            if key != "scores":
                yield from _metric_entries(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _metric_entries(value, f"{path}[{i}]")


@pytest.fixture(scope="module", params=CARDS)
def card(request) -> ModelCard:
    path = WEIGHTS / f"{request.param}.json"
    if not path.is_file():
        pytest.fail(f"shipped model card missing: {path}")
    return ModelCard.load(path)


def test_every_ece_interval_contains_its_estimate(card):
    entries = list(_metric_entries(card.metrics))
    assert len(entries) >= 6
    for where, m in entries:
        low, high = m["ci"]["ece"]
        assert 0.0 <= low <= m["ece"] <= high <= 1.0, (card.name, where, m["ece"], m["ci"]["ece"])


def test_findings_ece_intervals_are_reproduced_from_the_stored_scores():
    """Each finding's validation and test ECE interval is basic_ci over the patient bootstrap of its
    stored scores (what compute_metrics returns for them)."""
    card = ModelCard.load(WEIGHTS / "cxr_findings.json")
    for split in ("val", "test"):
        for name in card.labels:
            s, m = card.metrics[split]["scores"][name], card.metrics[split]["per_finding"][name]
            y, p, g = np.asarray(s["y"]), np.asarray(s["prob"]), np.asarray(s["g"])
            est = expected_calibration_error(y, p)
            values = [expected_calibration_error(y[i], p[i])
                      for i in resample_indices(len(y), m["n_boot"], np.random.default_rng(0), g)]
            assert est == pytest.approx(m["ece"], abs=1e-12)
            again = basic_ci(values, est, m["n_boot"], bounds=BIASED_METRICS["ece"])
            assert again == pytest.approx(m["ci"]["ece"], abs=1e-12), (split, name)
