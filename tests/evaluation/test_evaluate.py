"""Model-level evaluation (medcnn.evaluation.evaluate): scoring a card on labelled data, calibration.

The metric functions themselves are tested in tests/evaluation/test_metrics.py.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from medcnn.evaluation.evaluate import (
    calibrate_card,
    compute_metrics,
    evaluate_model,
    fit_temperature,
    score_dataset,
    softmax_t,
    youden_threshold,
)

# --------------------------------------------------------------------------- model level
LABELS = ["NORMAL", "PNEUMONIA"]


def make_tiny_project(tmp: Path, n: int = 36, extra_label: str | None = None) -> tuple[Path, Path]:
    """A random simplecnn checkpoint (32x32) + PNGs whose brightness depends on the label."""
    import torch
    from PIL import Image

    from medcnn.models.card import ModelCard
    from medcnn.models import create_model, default_target_layer, save_checkpoint
    from medcnn.preprocess import default_config

    rng = np.random.default_rng(0)
    (tmp / "img").mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split,patient_id,view_position"]
    for i in range(n):
        label = LABELS[i % 2]
        if extra_label and i % 6 == 5:
            label = extra_label
        arr = rng.integers(0, 120, (40, 36)) + (60 if label == "PNEUMONIA" else 0) + rng.integers(0, 60)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(tmp / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{label},{('train', 'val', 'test')[(i // 2) % 3]},p{i // 2},"
                    f"{'AP' if i % 4 < 2 else 'PA'}")
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    card = ModelCard(name="tiny", architecture="simplecnn", modality="CXR", labels=list(LABELS),
                     positive_label="PNEUMONIA", input_size=(32, 32),
                     preprocessing=default_config("CXR", 32),
                     target_layer=default_target_layer("simplecnn"), dicom_modalities=["CR", "DX"])
    card_path = save_checkpoint(create_model("simplecnn").eval(), card, tmp / "weights" / "tiny.pt")
    return card_path, tmp / "labels.csv"


@pytest.fixture()
def tiny(tmp_path):
    return make_tiny_project(tmp_path)


def test_score_dataset_matches_predictor(tiny):
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    card_path, csv = tiny
    scores = score_dataset(card_path, csv, split="test", device="cpu")
    assert scores.logits.shape == (len(scores.df), 2) and scores.logits.dtype == np.float32
    assert set(scores.df["split"]) == {"test"}
    pred = Predictor(card_path, device="cpu")
    for i in range(3):
        res = pred.predict(read_image(scores.df["path"][i]))
        assert res.logits == pytest.approx(scores.logits[i].tolist(), abs=1e-3)
        assert LABELS[scores.y[i]] == scores.df["label"][i]


def test_evaluate_model_uses_card_threshold_and_temperature(tiny):
    from medcnn.models.card import ModelCard

    card_path, csv = tiny
    card = ModelCard.load(card_path)
    card.temperature, card.threshold = 2.0, 0.45
    card.save(card_path)
    m = evaluate_model(card_path, [csv], n_boot=20, device="cpu", by="view_position")
    scores = score_dataset(card_path, csv, device="cpu")
    prob = softmax_t(scores.logits, 2.0)[:, 1]
    ref = compute_metrics(scores.y_pos, prob, 0.45, labels=LABELS, n_boot=20,
                          groups=scores.df["group"].to_numpy())
    assert m["threshold"] == 0.45 and m["n"] == 36 and m["model"] == "tiny"
    assert m["bootstrap"] == "groups" and m["n_groups"] == 18  # two images per patient
    assert {k: m[k] for k in ref} == ref
    assert set(m["by"]["groups"]) == {"AP", "PA"} and m["by"]["column"] == "view_position"


def test_unknown_labels_are_a_clear_error(tmp_path):
    card_path, csv = make_tiny_project(tmp_path, extra_label="OTHER")
    with pytest.raises(ValueError, match=r"OTHER \(6 rows\).*NORMAL, PNEUMONIA.*--classes"):
        evaluate_model(card_path, csv, n_boot=0, device="cpu")
    m = evaluate_model(card_path, csv, n_boot=0, device="cpu", classes=["NORMAL", "PNEUMONIA"])
    assert m["n"] == 30
    with pytest.raises(ValueError, match="not known to model"):
        evaluate_model(card_path, csv, n_boot=0, device="cpu", classes=["NORMAL", "OTHER"])


def test_by_unknown_column_lists_columns(tiny):
    with pytest.raises(ValueError, match="view_position"):
        evaluate_model(*tiny, n_boot=0, device="cpu", by="sex")


def test_calibrate_card_fits_on_val_only(tiny, tmp_path):
    from medcnn.models.card import ModelCard

    card_path, csv = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # temperature may sit at a bound on 12 images
        card = calibrate_card(card_path, csv, by="view_position", n_boot=20, device="cpu")
    saved = ModelCard.load(card_path)
    assert saved.temperature == card.temperature and saved.threshold == card.threshold
    assert {"val", "test", "calibration", "val_by_view_position", "test_by_view_position"} <= set(saved.metrics)
    assert saved.metrics["val"]["n"] == 12 and saved.metrics["test"]["n"] == 12
    assert saved.metrics["test"]["threshold"] == card.threshold
    # per-image scores for the curves: one per image, sorted by probability, reproducing the AUC
    for name in ("val", "test"):
        stored = saved.metrics[name]["scores"]
        assert len(stored["y"]) == len(stored["prob"]) == 12 and set(stored["y"]) <= {0, 1}
        assert stored["prob"] == sorted(stored["prob"], reverse=True)
        assert compute_metrics(np.array(stored["y"]), np.array(stored["prob"]), card.threshold,
                               n_boot=0)["auc"] == pytest.approx(saved.metrics[name]["auc"], abs=1e-5)
    # the calibration is a function of val alone
    scores = score_dataset(card_path, csv, split="val", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = fit_temperature(scores.logits, scores.y)
    assert card.temperature == pytest.approx(t)
    assert card.threshold == pytest.approx(youden_threshold(scores.y_pos, scores.prob(t)))
    # flipping every test label changes test metrics but not the calibration
    text = csv.read_text().splitlines()
    flipped = [text[0]] + [
        (r.replace("NORMAL", "X").replace("PNEUMONIA", "NORMAL").replace("X", "PNEUMONIA")
         if ",test," in r else r) for r in text[1:]]
    csv2 = csv.with_name("flipped.csv")
    csv2.write_text("\n".join(flipped) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        card2 = calibrate_card(card_path, csv2, n_boot=0, device="cpu", write=False)
    assert card2.temperature == pytest.approx(card.temperature)
    assert card2.threshold == pytest.approx(card.threshold)


def test_calibrate_card_without_val_rows_errors(tiny):
    card_path, csv = tiny
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [r for r in lines[1:] if ",val," not in r]) + "\n")
    with pytest.raises(ValueError, match="val"):
        calibrate_card(card_path, csv, n_boot=0, device="cpu")


@pytest.mark.parametrize("y", [[0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
def test_save_plots_writes_pngs_even_for_one_class(tmp_path, y):
    from medcnn.visualize.plots import save_plots

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = save_plots(y, [0.2, 0.5, 0.7, 0.9], 0.5, ["N", "P"], tmp_path / "plots", title="m")
    assert sorted(paths) == ["confusion", "pr", "reliability", "roc"]
    for p in paths.values():
        assert p.read_bytes()[:4] == b"\x89PNG"
