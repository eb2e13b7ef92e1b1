"""The decision rule (:class:`medcnn.models.head.Head`): probabilities, calls, operating points,
the explanation objective and the default target, with exact numbers on designed logits."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medcnn.models.head import NO_FINDING, Head


def logit(p: float) -> float:
    return math.log(p / (1 - p))


BINARY = Head.softmax(["NORMAL", "PNEUMONIA"], "PNEUMONIA", temperature=2.0, threshold=0.3)
FINDINGS = {"Effusion": {"temperature": 1.5, "threshold": 0.7}, "Nodule": {"threshold": 0.2},
            "Pneumothorax": {"threshold": 0.5}, "Hernia": {"threshold": 0.5, "shown": False}}
MULTI = Head.sigmoid(list(FINDINGS), "Effusion", FINDINGS)


def multi_logits(p: dict[str, float]) -> np.ndarray:
    return np.array([FINDINGS[n].get("temperature", 1.0) * logit(p[n]) for n in FINDINGS])


def test_softmax_probabilities_use_the_temperature():
    p = BINARY.probabilities(np.array([[0.0, 2.0]]))
    assert p[0, 1] == pytest.approx(1 / (1 + math.exp(-1.0)))  # sigmoid((2 - 0) / T), T = 2
    assert p.shape == (1, 2) and BINARY.probabilities([0.0, 2.0]).shape == (2,)


@pytest.mark.parametrize("p_pos, label, above", [(0.3, "PNEUMONIA", True), (0.299, "NORMAL", False),
                                                  (0.9, "PNEUMONIA", True)])
def test_binary_softmax_calls_the_positive_label_at_its_threshold(p_pos, label, above):
    d = BINARY.decide([1 - p_pos, p_pos])
    assert (d.label, d.called, d.above_threshold, d.threshold) == (label, [label], above, 0.3)
    assert d.findings == [] and d.positive_prob == pytest.approx(p_pos)
    assert BINARY.default_target(d) == label


def test_binary_operating_points_are_the_threshold_and_its_complement():
    assert BINARY.operating_point("PNEUMONIA") == 0.3
    assert BINARY.operating_point("NORMAL") == pytest.approx(0.7)
    three = Head.softmax(["a", "b", "c"], "b")
    assert three.operating_point("a") is None and three.decide([0.2, 0.3, 0.5]).label == "c"


def test_sigmoid_calls_shown_findings_at_or_above_their_own_points_ranked_relative_to_them():
    probs = MULTI.probabilities(multi_logits({"Effusion": 0.6, "Nodule": 0.4, "Pneumothorax": 0.5, "Hernia": 0.9}))
    assert probs == pytest.approx([0.6, 0.4, 0.5, 0.9])
    d = MULTI.decide(probs)
    # relative: Nodule 0.5 + 0.2/1.6 = 0.625, Pneumothorax 0.5, Effusion 0.6/1.4 = 0.4286; Hernia hidden
    assert [r["name"] for r in d.findings] == ["Nodule", "Pneumothorax", "Effusion"]
    assert [r["relative"] for r in d.findings] == pytest.approx([0.625, 0.5, 0.6 / 1.4])
    assert d.called == ["Nodule", "Pneumothorax"] and d.label == "Nodule, Pneumothorax"
    assert (d.positive_prob, d.above_threshold, d.threshold) == (pytest.approx(0.6), False, 0.7)
    assert MULTI.is_called("Pneumothorax", probs) and not MULTI.is_called("Hernia", probs)
    assert MULTI.default_target(d) == "Nodule" and MULTI.operating_point("Effusion") == 0.7


def test_sigmoid_with_nothing_called_says_so_and_still_targets_the_top_row():
    d = MULTI.decide([0.1, 0.1, 0.1, 0.99])
    assert d.called == [] and d.label == NO_FINDING
    assert MULTI.default_target(d) == "Nodule"  # 0.1 / 0.4 = 0.25 is the highest relative


@pytest.mark.parametrize("head, objective", [(BINARY, "difference"), (MULTI, "logit"),
                                             (Head.softmax(["only"], "only"), "logit")])
def test_the_objective_is_what_sets_the_displayed_probability(head, objective):
    assert head.objective == objective


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="tanh"), "unknown head 'tanh'"),
    (dict(thresholds=(0.5,)), "2 labels need 2 temperatures and 2 operating points"),
    (dict(positive_label="COVID"), "'COVID' is not one of the head's labels"),
    (dict(thresholds=(0.0, 0.0)), r"operating points must lie in \(0, 1\)"),
    (dict(temperatures=(0.0, 0.0)), "temperatures must be > 0"),
])
def test_an_inconsistent_head_is_refused_with_what_is_wrong(kwargs, match):
    fields = dict(kind="softmax", labels=("NORMAL", "PNEUMONIA"), positive_label="PNEUMONIA",
                  temperatures=(1.0, 1.0), thresholds=(0.5, 0.5), shown=("NORMAL", "PNEUMONIA"))
    with pytest.raises(ValueError, match=match):
        Head(**{**fields, **kwargs})


def test_wrong_number_of_outputs_and_unknown_labels_name_the_labels():
    with pytest.raises(ValueError, match="gives 3 outputs but its card names 2 labels"):
        BINARY.probabilities(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="'Mass' is not one of the model's labels"):
        MULTI.operating_point("Mass")


def test_positives_are_what_a_table_flags():
    assert BINARY.positives == ("PNEUMONIA",)
    assert MULTI.positives == ("Effusion", "Nodule", "Pneumothorax")  # Hernia is not presented
