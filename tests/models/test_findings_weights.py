"""The shipped multi-label chest X-ray findings model: a complete card, per-finding operating points,
stored scores that reproduce its AUCs, a gate, and (with ../shared/data) its test metrics and maps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medcnn.evaluation.findings import MIN_AUC_LOWER
from medcnn.evaluation.operating_points import PURPOSE, choose_threshold, point_metrics, presentable
from medcnn.evaluation.operating_points_card import REFERENCE_NAME, REFERENCE_PREVALENCE
from medcnn.models.card import ModelCard

CARD = Path(__file__).resolve().parents[2] / "weights" / "cxr_findings.json"
DATASETS = ("rsna_cxr_pneumonia", "nih_cxr_pneumonia", "nih_cxr14_starter")


@pytest.fixture(scope="module")
def card() -> ModelCard:
    if not CARD.is_file():
        pytest.fail(f"shipped model card missing: {CARD}")
    return ModelCard.load(CARD)


def test_card_is_complete(card):
    assert card.multilabel and card.modality == "CXR" and card.name == "cxr_findings"
    assert card.weights_path.stat().st_size < 50 * 1024 * 1024
    assert card.positive_label == "Lung Opacity" and len(card.labels) >= 5
    for name in card.labels:
        f = card.findings[name]
        assert 0 < f["threshold"] < 1 and f["temperature"] > 0 and f["reason"]
        assert isinstance(f["shown"], bool)
    for key in ("command", "git_commit", "date", "sources", "findings"):
        assert card.training.get(key), f"card.training lacks {key}"
    assert all(d in json.dumps(card.training["data"]) for d in DATASETS)
    assert card.intended_use and len(card.limitations) >= 3 and card.experiments
    assert card.ood.get("file") and card.ood_path.is_file()
    assert "shortcut_findings" in card.audit


def test_shown_findings_follow_the_rule(card):
    """A finding is presented iff the lower end of its test AUC's 95% CI reaches the bound, acquisition
    features alone do not predict its labels as well as the model does, and its operating point has a
    useful CI on validation (the operating-point policy)."""
    test = card.metrics["test"]["findings"]
    audit = card.audit["shortcut_findings"]["findings"]
    for name in card.labels:
        f = card.findings[name]
        lower = test[name]["auc_ci"][0]
        shortcut = audit[name].get("confounded") and audit[name]["best"]["auc"] >= test[name]["auc"]
        assert f["operating_point_shown"] == presentable(f["val"])[0], name
        assert f["shown"] == (lower >= MIN_AUC_LOWER and not shortcut and f["operating_point_shown"]), name
    assert card.shown_findings(), "no finding passes the bound: the model shows nothing"


def _stored(card, split, name):
    s = card.metrics[split]["scores"][name]
    return np.asarray(s["y"]), np.asarray(s["prob"]), np.asarray(s["g"])


def test_operating_points_are_the_policy_on_validation(card):
    """Each point is the lowest validation threshold reaching specificity 0.85, chosen on validation only;
    the previous (Youden) point is kept beside it."""
    for name in card.labels:
        f = card.findings[name]
        y, p, _ = _stored(card, "val", name)
        assert f["rule"] == PURPOSE and f["threshold"] == choose_threshold(y, p), name
        assert f["val"]["specificity"] >= 0.85 and "Youden" in f["previous_rule"], name
        assert 0 < f["previous_threshold"] < 1 and f["previous_threshold"] != f["threshold"], name


def test_recorded_operating_point_figures_are_reproduced_from_the_stored_scores(card):
    """Validation and test sensitivity, specificity, PPV and NPV (with patient-bootstrap CIs) at each point,
    recomputed from the per-image scores stored in the card, equal the recorded ones."""
    for name in card.labels:
        f = card.findings[name]
        ref = {REFERENCE_NAME: REFERENCE_PREVALENCE[name]} if name in REFERENCE_PREVALENCE else {}
        for split in ("val", "test"):
            y, p, g = _stored(card, split, name)
            prev = {"validation": f["val"]["predictive"]["validation"]["prevalence"], **ref}
            m = point_metrics(y, p, f["threshold"], prevalences=prev, groups=g, n_boot=1000, seed=0)
            assert json.loads(json.dumps(m)) == f[split], (name, split)
        # the page's table (per-finding metrics) agrees with the recorded operating point
        per = card.metrics["test"]["per_finding"][name]
        assert per["threshold"] == f["threshold"] and per["recall"] == pytest.approx(f["test"]["sensitivity"])
        assert per["ci"]["recall"] == pytest.approx(f["test"]["sensitivity_ci"]), name


def test_fewer_test_films_call_the_presented_findings(card):
    """The decision rule on the test films: no presented finding is called on more films than before."""
    run = next(e for e in card.experiments if e.get("run", "").startswith("operating points:"))
    before, after = run["test_films_calling"]["before"], run["test_films_calling"]["after"]
    for name in card.shown_findings():
        assert after["per_finding"][name] <= before["per_finding"][name], name
    assert after["all"] < before["all"] and after["any"] < before["any"]


def test_stored_scores_reproduce_the_card_aucs(card):
    m = card.metrics["test"]
    for name in card.labels:
        s = m["scores"][name]
        assert len(s["y"]) == m["findings"][name]["n_pos"] + m["findings"][name]["n_neg"]
        assert roc_auc_score(s["y"], s["prob"]) == pytest.approx(m["findings"][name]["auc"], abs=1e-6)


def test_predict_json_gives_findings(card, shared_data, capsys):
    from medcnn.__main__ import main

    folder = shared_data / "rsna_cxr_pneumonia"
    import pandas as pd

    rows = pd.read_csv(folder / "labels.csv")
    files = [str(folder / p) for p in rows[rows["split"] == "test"]["path"].head(3)]
    assert main(["predict", *files, "--model", str(CARD), "--json"]) == 0
    for r in json.loads(capsys.readouterr().out)["results"]:
        assert set(r["probabilities"]) == set(card.labels)
        names = [f["name"] for f in r["findings"]]
        assert names and set(names) == set(card.shown_findings())
        rel = [f["relative"] for f in r["findings"]]
        assert rel == sorted(rel, reverse=True) and all(0 <= v <= 1 for v in rel)


def test_card_test_aucs_are_reproduced(card, shared_data):
    from medcnn.evaluation.evaluate_findings import finding_scores_metrics, score_findings

    scores = score_findings(CARD, [shared_data / d / "labels.csv" for d in DATASETS], split="test", device="cpu")
    m = finding_scores_metrics(scores, by=(), n_boot=0)
    for name in card.labels:
        assert m["findings"][name]["auc"] == pytest.approx(card.metrics["test"]["findings"][name]["auc"], abs=0.01)


def test_lung_opacity_maps_depend_on_the_weights(card, shared_data):
    """Model-randomisation sanity check of Grad-CAM on the Lung Opacity output (the box-supervised one)."""
    import pandas as pd

    from medcnn.explain.sanity import randomisation_test
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    folder = shared_data / "rsna_cxr_pneumonia"
    rows = pd.read_csv(folder / "labels.csv")
    row = rows[(rows["split"] == "test") & (rows["label"] == "PNEUMONIA")].iloc[0]
    predictor = Predictor(CARD, device="cpu")
    x = predictor.predict(read_image(folder / row["path"])).pipeline_result.tensor
    result = randomisation_test(predictor.model, x, card.positive_index, "gradcam", layer=card.target_layer)
    assert result["passes"], result
    assert np.isfinite(result["final_spearman"])
