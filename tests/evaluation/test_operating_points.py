"""The operating-point policy: exact thresholds on synthetic scores, CIs, PPV/NPV and when a finding is not presented."""
from __future__ import annotations

import numpy as np
import pytest

from medcnn.evaluation.operating_points import (
    MIN_POSITIVES,
    PURPOSE,
    choose_operating_point,
    choose_threshold,
    point_metrics,
    predictive_values,
    presentable,
)


def _scores(n_neg: int = 20, n_pos: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Negatives at 0.00, 0.01, ..., positives at 0.105, 0.115, ... (interleaved above 0.10)."""
    neg = np.arange(n_neg) / 100
    pos = 0.105 + np.arange(n_pos) / 100
    return np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)], np.r_[neg, pos]


def test_lowest_threshold_reaching_the_specificity():
    y, p = _scores()
    # 17 of 20 negatives (0.00..0.16) must be cleared: the lowest score above 0.16 is the positive at 0.165
    assert choose_threshold(y, p, 0.85) == pytest.approx(0.165)
    # 0.80 needs 16 cleared (0.00..0.15): the lowest score above 0.15 is 0.155
    assert choose_threshold(y, p, 0.80) == pytest.approx(0.155)
    assert choose_threshold(y, p, 1.0) == pytest.approx(0.195)  # above the highest negative, 0.19


def test_the_chosen_point_has_the_stated_rates():
    y, p = _scores()
    m = point_metrics(y, p, choose_threshold(y, p), n_boot=0)
    assert m["specificity"] == pytest.approx(17 / 20) and m["sensitivity"] == pytest.approx(14 / 20)
    assert m["sensitivity_ci"] is None  # no resamples, no interval


def test_ties_at_the_boundary_are_not_called():
    """With three negatives tied at the boundary score, the threshold must clear them all."""
    y = np.array([0] * 10 + [1] * 3)
    p = np.array([0.1] * 8 + [0.5, 0.5] + [0.5, 0.6, 0.7])
    t = choose_threshold(y, p, 0.85)  # 9 of 10 negatives needed: the tie at 0.5 forces 0.6
    assert t == pytest.approx(0.6)
    m = point_metrics(y, p, t, n_boot=0)
    assert m["specificity"] == 1.0 and m["sensitivity"] == pytest.approx(2 / 3)


def test_no_score_above_the_cleared_negative_calls_nothing():
    y, p = np.array([1, 0, 0]), np.array([0.2, 0.1, 0.9])
    t = choose_threshold(y, p, 1.0)
    assert t > 0.9 and point_metrics(y, p, t, n_boot=0)["sensitivity"] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="negatives"):
        choose_threshold([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        choose_threshold([0, 1], [0.2])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        choose_threshold([0, 1], [0.2, 0.3], 1.5)


def test_predictive_values_by_bayes_rule():
    ppv, npv = predictive_values(0.8, 0.9, 0.1)
    assert ppv == pytest.approx(0.08 / (0.08 + 0.09)) and npv == pytest.approx(0.81 / (0.81 + 0.02))
    assert predictive_values(0.0, 1.0, 0.1)[0] is None  # nothing called: PPV undefined


def test_intervals_bracket_the_estimate_and_follow_the_seed():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1)
    a = point_metrics(y, p, 0.5, prevalences={"clinic": 0.05}, n_boot=200, seed=1)
    b = point_metrics(y, p, 0.5, prevalences={"clinic": 0.05}, n_boot=200, seed=1)
    assert a == b and a["bootstrap"] == "images"
    for key in ("sensitivity", "specificity"):
        lo, hi = a[f"{key}_ci"]
        assert lo <= a[key] <= hi and hi - lo > 0
    clinic = a["predictive"]["clinic"]
    assert clinic["ppv"] == pytest.approx(predictive_values(a["sensitivity"], a["specificity"], 0.05)[0])
    assert clinic["ppv_ci"][0] <= clinic["ppv"] <= clinic["ppv_ci"][1]


def test_patient_bootstrap_when_groups_are_given():
    y, p = _scores()
    m = point_metrics(y, p, 0.165, groups=np.arange(len(y)) // 2, n_boot=100)
    assert m["bootstrap"] == "patients" and m["sensitivity_ci"] is not None


def test_a_finding_with_too_few_positives_is_not_presented():
    y, p = _scores(n_neg=100, n_pos=MIN_POSITIVES - 1)
    op = choose_operating_point(y, p, n_boot=100)
    assert not op.shown and op.rule == PURPOSE
    assert f"only {MIN_POSITIVES - 1} validation images with the finding" in op.reason


def test_a_point_whose_sensitivity_could_be_zero_is_not_presented():
    """Positives scored like negatives: few are above the point, so the sensitivity CI reaches 0."""
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(200, int), np.ones(12, int)]
    p = np.r_[rng.uniform(0, 1, 200), [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.9]]
    op = choose_operating_point(y, p, n_boot=500)
    assert op.val["sensitivity_ci"][0] == 0.0
    assert not op.shown and "the sensitivity could be 0" in op.reason


def test_a_point_with_an_uncertain_specificity_is_not_presented():
    shown, reason = presentable({"n_pos": 50, "sensitivity": 0.5, "sensitivity_ci": [0.4, 0.6],
                                 "specificity": 0.85, "specificity_ci": [0.7, 0.95]})
    assert not shown and "specificity could be below 0.75" in reason


def test_a_well_estimated_point_is_presented_with_its_numbers():
    y = np.r_[np.zeros(200, int), np.ones(60, int)]
    p = np.r_[np.linspace(0, 0.6, 200), np.linspace(0.4, 1.0, 60)]
    op = choose_operating_point(y, p, prevalences={"archive": 0.05}, n_boot=200)
    assert op.shown and op.reason.startswith(f"at {PURPOSE}: validation sensitivity")
    assert set(op.val["predictive"]) == {"validation", "archive"}
    assert op.val["predictive"]["validation"]["prevalence"] == pytest.approx(60 / 260)


def test_anonymous_patient_ranks_resample_like_the_ids():
    """The card stores patients as ranks (no identifier); the patient bootstrap over them is the same."""
    from medcnn.evaluation.operating_points_card import anonymous_groups

    y, p = _scores()
    ids = np.array([f"patient-{(7 * i) % 13:02d}" for i in range(len(y))])
    ranks = anonymous_groups(ids)
    assert ranks.dtype == np.int64 and sorted(set(ranks)) == list(range(13))
    assert point_metrics(y, p, 0.165, groups=ranks, n_boot=50) == point_metrics(y, p, 0.165, groups=ids, n_boot=50)
