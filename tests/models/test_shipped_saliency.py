"""Where the shipped chest X-ray models' maps fall on the RSNA test boxes, re-measured.

The saliency audit each card records (``audit.saliency_test``: pointing game, box mass, empty maps
above and below the operating point) is re-run on the same films with the shipped weights. The
figures must be reproduced (the maps are deterministic), so a change that moves the maps off the
lesions, or empties maps on films the model calls, fails here instead of going unnoticed. The
pneumonia model's displayed map (the logit difference) must have no empty map above its operating
point; the findings model's Lung Opacity map may not have more than its card records.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcnn.models.card import ModelCard

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


def _audit(card: ModelCard, shared_data: Path, capsys) -> dict:
    from medcnn.__main__ import main

    recorded = card.audit["saliency_test"]
    capsys.readouterr()
    rc = main(["audit", "--saliency", "--model", str(card.path),
               "--data", str(shared_data / "rsna_cxr_pneumonia" / "labels.csv"),
               "--classes", ",".join(recorded["labels"]), "--split", "test", "--method", recorded["method"],
               "--objective", "auto", "--json", "--device", "cpu"])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", ["cxr_findings", "cxr_pneumonia"])
def test_test_box_audit_reproduces_the_card(name, shared_data, capsys):
    card = ModelCard.load(WEIGHTS / f"{name}.json")
    recorded = card.audit["saliency_test"]
    report = _audit(card, shared_data, capsys)
    assert report["n"] == recorded["n"] and report["objective"] == recorded["objective"]
    for key in ("pointing", "pointing_all", "in_box", "outside_thorax"):
        assert report["metrics"][key]["n"] == recorded["metrics"][key]["n"], key
        assert report["metrics"][key]["mean"] == pytest.approx(recorded["metrics"][key]["mean"], abs=1e-3), key
    above, was = report["empty_maps"]["above_operating_point"], recorded["empty_maps"]["above_operating_point"]
    assert above["n"] == was["n"] and above["empty"] <= was["empty"]
    # better than a random point by a wide margin
    assert report["metrics"]["pointing"]["mean"] > 2 * report["metrics"]["pointing"]["random_smooth"]
    if name == "cxr_pneumonia":  # the displayed (logit-difference) map is never empty on a film it calls
        assert above["empty"] == 0
