"""Metrics, bootstrap CIs and calibration (medcnn.evaluation.metrics, .bootstrap, .calibration).

Hand-made examples with known values, agreement with scikit-learn, and the properties of the
(cluster) bootstrap: the interval contains the estimate, narrows with n, widens for correlated rows.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from medcnn.evaluation.bootstrap import mean_ci, percentile_ci, resample_indices, statistic_ci
from medcnn.evaluation.metrics import (
    auc_ci,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
    metrics_by_group,
    roc_auc,
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


# --------------------------------------------------------------------------- the one AUC
def test_roc_auc_hand_values_ties_and_one_class():
    assert roc_auc(Y_HAND, P_HAND) == pytest.approx(14 / 16)
    # pairs (pos, neg): (0.5, 0.5) tie = 1/2, (0.5, 0.2), (0.9, 0.5), (0.9, 0.2) -> 3.5 / 4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875
    assert roc_auc([1, 0], [0.9, 0.1]) == 1.0 and roc_auc([1, 0], [0.1, 0.9]) == 0.0
    assert roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None and roc_auc([0, 0], [0.2, 0.5]) is None


def test_roc_auc_equals_sklearn_with_heavy_ties():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 500)
    s = np.round(0.4 * y + rng.random(500), 1)  # 15 distinct values: many ties
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert compute_metrics(y, np.clip(s, 0, 1), n_boot=0)["auc"] == pytest.approx(
        skm.roc_auc_score(y, np.clip(s, 0, 1)), abs=1e-12)


def test_sensitivity_specificity_on_an_unbalanced_hand_example():
    # 4 positives, 6 negatives at threshold 0.5: tp 3, fn 1, tn 4, fp 2
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.6, 0.3, 0.7, 0.55, 0.4, 0.2, 0.1, 0.05]
    m = compute_metrics(y, p, 0.5, labels=("NORMAL", "PNEUMONIA"), n_boot=0)
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert m["recall"] == pytest.approx(3 / 4)  # sensitivity
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    # ranking: positives win 20 of 24 (pos, neg) pairs (0.6 loses to 0.7; 0.3 to 0.7, 0.55, 0.4)
    assert m["auc"] == pytest.approx(20 / 24)
    assert m["per_class"]["NORMAL"] == {"precision": 0.8, "recall": pytest.approx(4 / 6),
                                        "f1": pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6)), "support": 6}


def test_auc_ci_is_the_interval_compute_metrics_reports():
    # one bootstrap: the audit's AUC interval and the metric set's are the same computation
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 120)
    p = np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)
    g = np.arange(120) // 3
    for groups in (None, g):
        m = compute_metrics(y, p, n_boot=200, seed=5, groups=groups)
        assert auc_ci(y, p, groups=groups, n_boot=200, seed=5) == m["auc_ci"]
    lo, hi = auc_ci(y, p, groups=g, n_boot=200, seed=5)
    assert lo <= roc_auc(y, p) <= hi
    assert auc_ci([1, 1, 0], [0.9, 0.8, 0.1], n_boot=0) is None


# --------------------------------------------------------------------------- bootstrap
def test_resample_indices_rows_and_whole_groups():
    rng = np.random.default_rng(0)
    rows = list(resample_indices(10, 5, rng))
    assert len(rows) == 5 and all(len(r) == 10 and r.min() >= 0 and r.max() < 10 for r in rows)
    groups = np.array(["b", "a", "b", "c", "a", "b"])
    for idx in resample_indices(6, 50, np.random.default_rng(1), groups):
        drawn = groups[idx]
        # every drawn group comes whole: its rows in row order, as often as the group was drawn
        for name in set(drawn):
            members = np.flatnonzero(groups == name)
            count = int((drawn == name).sum()) // len(members)
            assert count * len(members) == int((drawn == name).sum())
            assert sorted(idx[drawn == name].tolist()) == sorted(members.tolist() * count)
        assert sum(int((drawn == n).sum()) // int((groups == n).sum()) for n in set(drawn)) == 3
    again = list(resample_indices(6, 3, np.random.default_rng(1), groups))
    first = list(resample_indices(6, 3, np.random.default_rng(1), groups))
    assert all(np.array_equal(a, b) for a, b in zip(again, first))  # seeded


def test_percentile_ci_needs_half_the_resamples():
    assert percentile_ci([0.1, 0.2, 0.3, 0.4], n_boot=8) == [pytest.approx(0.1075), pytest.approx(0.3925)]
    assert percentile_ci([0.1, 0.2, 0.3], n_boot=8) is None  # 3 of 8 resamples defined
    assert percentile_ci([0.5], n_boot=1) is None and percentile_ci([], n_boot=0) is None


def test_statistic_ci_contains_the_estimate_and_skips_undefined_resamples():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 1.0, 200)
    lo, hi = statistic_ci(lambda idx: float(x[idx].mean()), len(x), n_boot=300, seed=0)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.25)
    assert statistic_ci(lambda idx: None, 10, n_boot=50) is None


def test_mean_ci_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(4)
    small, large = rng.random(30), rng.random(3000)
    ci_small = mean_ci(small, np.random.default_rng(0), n_boot=400)
    ci_large = mean_ci(large, np.random.default_rng(0), n_boot=400)
    assert ci_small[0] <= small.mean() <= ci_small[1] and ci_large[0] <= large.mean() <= ci_large[1]
    assert ci_large[1] - ci_large[0] < 0.25 * (ci_small[1] - ci_small[0])
    assert mean_ci([0.3], np.random.default_rng(0)) == [0.3, 0.3]
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([], np.random.default_rng(0))
