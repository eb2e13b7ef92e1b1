"""Metrics, bootstrap CIs, calibration and model-level evaluation (medcnn.evaluation.metrics / medcnn.evaluation.evaluate)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from medcnn.evaluation.evaluate import (
    calibrate_card,
    compute_metrics,
    evaluate_model,
    expected_calibration_error,
    fit_temperature,
    metrics_by_group,
    score_dataset,
    softmax_t,
    youden_threshold,
)

# --------------------------------------------------------------------------- hand example
# y, prob and threshold 0.5 -> pred [0,0,1,1,1,0,1,0]: tn 3, fp 1, fn 1, tp 3.
Y_HAND = [0, 0, 0, 1, 1, 1, 1, 0]
P_HAND = [0.1, 0.4, 0.6, 0.8, 0.7, 0.3, 0.9, 0.2]


def test_hand_example_expected_values():
    m = compute_metrics(Y_HAND, P_HAND, 0.5, labels=("NORMAL", "PNEUMONIA"), n_boot=0)
    assert m["n"] == 8 and m["n_pos"] == 4 and m["n_neg"] == 4
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    for k in ("accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1"):
        assert m[k] == pytest.approx(0.75), k
    assert m["kappa"] == pytest.approx(0.5)  # po 0.75, pe 0.5
    assert m["auc"] == pytest.approx(14 / 16)  # 14 of 16 (pos, neg) pairs ranked right
    assert m["pr_auc"] == pytest.approx(0.75 + 0.25 * 4 / 6)
    assert m["brier"] == pytest.approx(1.2 / 8)
    assert m["ece"] == pytest.approx(2.6 / 8)  # each prob alone in its bin
    assert m["per_class"]["PNEUMONIA"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert m["labels"] == ["NORMAL", "PNEUMONIA"] and m["threshold"] == 0.5
    assert m["auc_ci"] is None and m["ci"]["auc"] is None  # n_boot=0
    json.dumps(m)  # JSON-ready


def test_threshold_moves_the_operating_point():
    m = compute_metrics(Y_HAND, P_HAND, 0.75, n_boot=0)
    assert m["confusion_matrix"] == [[4, 0], [2, 2]]
    assert m["specificity"] == 1.0 and m["recall"] == 0.5
    assert m["auc"] == pytest.approx(14 / 16)  # threshold-free


def test_metrics_match_sklearn_on_random_arrays():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.35 * y + 0.65 * rng.random(300), 0, 1)
    thr = 0.45
    pred = (p >= thr).astype(int)
    m = compute_metrics(y, p, thr, n_boot=0)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(2)

    def sample(n):
        y = rng.integers(0, 2, n)
        return y, np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)

    small = compute_metrics(*sample(80), n_boot=100, seed=0)
    large = compute_metrics(*sample(2000), n_boot=100, seed=0)
    for m in (small, large):
        for k, ci in m["ci"].items():
            assert ci is not None, k
            assert ci[0] <= m[k] <= ci[1], k
        assert m["auc_ci"] == m["ci"]["auc"]
    width = lambda m, k: m["ci"][k][1] - m["ci"][k][0]  # noqa: E731
    for k in ("auc", "accuracy", "f1"):
        assert width(large, k) < 0.5 * width(small, k), k


def test_bootstrap_is_seeded():
    y, p = np.array(Y_HAND * 5), np.array(P_HAND * 5)
    a, b, c = (compute_metrics(y, p, n_boot=30, seed=s) for s in (3, 3, 4))
    assert a == b and a["ci"] != c["ci"]


def test_cluster_bootstrap_widens_ci_for_correlated_rows():
    # 30 patients x 10 identical images: only 30 independent observations.
    rng = np.random.default_rng(3)
    y0 = rng.integers(0, 2, 30)
    p0 = np.clip(0.25 * y0 + 0.75 * rng.random(30), 0, 1)
    y, p, g = np.repeat(y0, 10), np.repeat(p0, 10), np.repeat(np.arange(30), 10)
    rows = compute_metrics(y, p, n_boot=150)
    clus = compute_metrics(y, p, n_boot=150, groups=g)
    assert rows["bootstrap"] == "rows" and clus["bootstrap"] == "groups" and clus["n_groups"] == 30
    assert clus["auc"] == rows["auc"]  # point estimate unchanged
    w_rows = rows["auc_ci"][1] - rows["auc_ci"][0]
    w_clus = clus["auc_ci"][1] - clus["auc_ci"][0]
    assert w_clus > 2 * w_rows
    # and the cluster CI matches the one of the 30 unique patients
    uniq = compute_metrics(y0, p0, n_boot=150)
    assert w_clus == pytest.approx(uniq["auc_ci"][1] - uniq["auc_ci"][0], rel=0.35)


def test_single_class_subset_has_no_auc_but_no_crash():
    m = compute_metrics([1, 1, 1], [0.2, 0.6, 0.9], 0.5, labels=("N", "P"), n_boot=50)
    assert m["auc"] is None and m["auc_ci"] is None and m["pr_auc"] is None and m["kappa"] is None
    assert m["specificity"] is None  # no negatives
    assert m["recall"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(2 / 3)
    assert m["notes"] and "AUC" in m["notes"][0]
    assert m["confusion_matrix"] == [[0, 0], [1, 2]]
    json.dumps(m)


@pytest.mark.parametrize("y, p, thr, match", [
    ([0, 1], [0.2], 0.5, "same length"),
    ([0, 2], [0.2, 0.3], 0.5, "0/1"),
    ([0, 1], [0.2, 1.3], 0.5, r"\[0, 1\]"),
    ([0, 1], [0.2, np.nan], 0.5, "finite"),
    ([], [], 0.5, "empty"),
    ([0, 1], [0.2, 0.3], 1.5, "threshold"),
])
def test_bad_inputs_raise(y, p, thr, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(y, p, thr, n_boot=0)


def test_metrics_by_group_equals_metrics_on_subsets():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 120)
    p = np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)
    view = rng.choice(np.array(["AP", "PA", None], dtype=object), 120)
    pid = rng.integers(0, 50, 120)
    by = metrics_by_group(y, p, view, 0.4, n_boot=30, seed=1, groups=pid)
    assert set(by) == {"AP", "PA", "missing"}
    assert sum(m["n"] for m in by.values()) == 120
    for key, value in (("AP", "AP"), ("PA", "PA"), ("missing", None)):
        mask = np.array([v == value for v in view])
        assert by[key] == compute_metrics(y[mask], p[mask], 0.4, n_boot=30, seed=1, groups=pid[mask])
        assert by[key]["n"] == int(mask.sum())


def test_ece_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(5)
    p = rng.random(20000)
    y_cal = (rng.random(20000) < p).astype(int)
    y_mis = (rng.random(20000) < p**3).astype(int)
    assert expected_calibration_error(y_cal, p) < 0.02
    assert expected_calibration_error(y_mis, p) > 0.1


def test_ece_hand_bins():
    # bins [0.0, 0.1): p 0.05 x2 with y 0, 1 -> |0.5 - 0.05| * 2/4 ; bin [0.9, 1.0]: p 1.0, 0.95 y 1 -> 0.025 * 2/4
    assert expected_calibration_error([0, 1, 1, 1], [0.05, 0.05, 1.0, 0.95]) == pytest.approx(
        0.45 * 0.5 + 0.025 * 0.5)


def _sample_labels(logits: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    probs = softmax_t(logits, t)
    return (rng.random((len(probs), 1)) > probs.cumsum(axis=1)).sum(axis=1)


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_fit_temperature_recovers_known_temperature(t_true):
    rng = np.random.default_rng(6)
    logits = rng.normal(0, 3, size=(20000, 3))
    y = _sample_labels(logits, t_true, rng)
    assert fit_temperature(logits, y) == pytest.approx(t_true, rel=0.06)


def test_fit_temperature_improves_nll_and_validates():
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 4, size=(3000, 2))
    y = _sample_labels(logits, 3.0, rng)
    t = fit_temperature(logits, y)
    nll = lambda tt: skm.log_loss(y, softmax_t(logits, tt))  # noqa: E731
    assert nll(t) < nll(1.0)
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(logits, np.full(3000, 2))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        fit_temperature(logits[:, 0], y)


def test_fit_temperature_warns_at_bound_on_separable_data():
    logits = np.array([[5.0, -5.0], [-5.0, 5.0]] * 10)
    y = np.array([0, 1] * 10)
    with pytest.warns(UserWarning, match="not identifiable"):
        t = fit_temperature(logits, y)
    assert t < 1.0


def test_youden_threshold_constructed_example():
    # thr 0.7: TPR 0.75, FPR 0 -> J 0.75 (best); thr 0.5: TPR 1, FPR 2/6 -> J 0.67
    y = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.6, 0.65, 0.5, 0.7, 0.8, 0.9]
    assert youden_threshold(y, p) == pytest.approx(0.7)
    m = compute_metrics(y, p, youden_threshold(y, p), n_boot=0)
    assert m["recall"] - (1 - m["specificity"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold([1, 1], [0.2, 0.4])


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
