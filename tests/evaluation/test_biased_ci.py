"""The interval of a biased statistic (the ECE): basic bootstrap, within range, containing its estimate.

The plug-in ECE overestimates the true ECE and the resamples' ECEs sit higher still, so the
percentile interval can lie wholly above its own estimate (as it did on the shipped cards); see
:mod:`medcnn.evaluation.bootstrap` for the method and its justification.
"""
from __future__ import annotations

import numpy as np
import pytest

from medcnn.evaluation.bootstrap import basic_ci, percentile_ci, resample_indices
from medcnn.evaluation.metrics import BIASED_METRICS, auc_ci, compute_metrics, expected_calibration_error


def _true_ece(calibration, a: float, b: float) -> float:
    """Population ECE (10 equal-width bins) of probabilities Beta(a, b) with P(y=1 | p) = calibration(p)."""
    p = np.random.default_rng(123).beta(a, b, 1_000_000)
    idx = np.clip((p * 10).astype(np.int64), 0, 9)
    return float(np.abs(np.bincount(idx, calibration(p), 10) - np.bincount(idx, p, 10)).sum() / p.size)


def test_basic_ci_hand_values():
    values = [0.1, 0.2, 0.3, 0.4]  # percentile interval [0.1075, 0.3925] at n_boot=8
    assert basic_ci(values, 0.25, 8) == [pytest.approx(0.1075), pytest.approx(0.3925)]  # symmetric: as percentile
    # the resamples sit far above the estimate: reflected to [-0.2925, -0.0075], clipped to 0, widened to 0.05
    assert basic_ci(values, 0.05, 8, bounds=(0.0, 1.0)) == [0.0, 0.05]
    assert basic_ci(values, 0.25, 8, bounds=(0.0, 0.3)) == [pytest.approx(0.1075), 0.3]
    assert basic_ci(values, None, 8) is None  # no estimate, no interval
    assert basic_ci(values[:3], 0.25, 8) is None  # fewer than half the resamples defined


def test_ece_interval_contains_the_estimate_where_the_percentile_interval_did_not():
    """A calibrated model (true ECE 0) on 100 images: every resample's ECE exceeds the estimate's 2.5 %
    quantile level, so the percentile interval lies above the estimate (and above the truth); the
    reported interval contains both."""
    rng = np.random.default_rng(49)
    p = rng.beta(2, 5, 100)
    y = (rng.random(100) < p).astype(np.int64)
    est = expected_calibration_error(y, p)
    resampled = [expected_calibration_error(y[i], p[i]) for i in resample_indices(100, 300, np.random.default_rng(0))]
    old = percentile_ci(resampled, 300)
    assert est == pytest.approx(0.0456, abs=1e-4) and old[0] > est  # the old interval excluded its estimate

    m = compute_metrics(y, p, 0.5, n_boot=300, seed=0)
    assert m["ece"] == pytest.approx(est)
    assert m["ci"]["ece"][0] <= est <= m["ci"]["ece"][1]
    assert m["ci"]["ece"][0] == 0.0  # reaches the true ECE of a calibrated model
    assert m["ci"]["ece"] == basic_ci(resampled, est, 300, bounds=BIASED_METRICS["ece"])


def test_other_metrics_keep_the_percentile_interval():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 120)
    p = np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)
    m = compute_metrics(y, p, 0.5, n_boot=200, seed=0)
    assert m["ci"]["auc"] == auc_ci(y, p, n_boot=200, seed=0)  # the same resamples, the percentile interval
    assert set(BIASED_METRICS) == {"ece"}


def test_ece_interval_covers_the_true_ece_of_a_simulated_over_confident_model():
    """Coverage sanity (seeded): 60 data sets of 100 images from a model whose probabilities are too
    extreme (P(y=1 | p) = 0.5 + 0.6 (p - 0.5), true ECE 0.075). The percentile interval covers the
    true ECE in 7 of 60 data sets, the basic one in 54 of 60 (nominal 57)."""
    calibration = lambda q: 0.5 + 0.6 * (q - 0.5)  # noqa: E731
    truth = _true_ece(calibration, 2, 3)
    assert truth == pytest.approx(0.0749, abs=5e-4)
    rng = np.random.default_rng(7)
    old = new = contains = 0
    for _ in range(60):
        p = rng.beta(2, 3, 100)
        y = (rng.random(100) < calibration(p)).astype(np.int64)
        est = expected_calibration_error(y, p)
        values = [expected_calibration_error(y[i], p[i]) for i in resample_indices(100, 200, rng)]
        lo, hi = percentile_ci(values, 200)
        old += lo <= truth <= hi
        lo, hi = basic_ci(values, est, 200, bounds=(0.0, 1.0))
        new += lo <= truth <= hi
        contains += lo <= est <= hi
    assert old <= 12 and new >= 51 and contains == 60  # measured: 7, 54, 60
