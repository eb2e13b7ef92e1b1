"""What callers ask a decision rule (:class:`medcnn.models.head.Head`) instead of its kind: per-finding
rows or one label, hidden labels, the explanation target's wording and menu, which label a site's
binary labels can recalibrate, and where a card stores a label's numbers."""
from __future__ import annotations

import pytest

from medcnn.models.head import Head

BINARY = Head.softmax(["NORMAL", "PNEUMONIA"], "PNEUMONIA", temperature=2.0, threshold=0.3)
THREE = Head.softmax(["COVID", "NORMAL", "PNEUMONIA"], "COVID")
FINDINGS = {"Effusion": {"temperature": 1.5, "threshold": 0.7, "test": {"auc": 0.8}}, "Nodule": {"threshold": 0.2},
            "Hernia": {"threshold": 0.5, "shown": False}}
MULTI = Head.sigmoid(list(FINDINGS), "Effusion", FINDINGS)


def test_per_finding_heads_present_rows_and_name_their_targets_findings():
    assert (BINARY.per_finding, THREE.per_finding, MULTI.per_finding) == (False, False, True)
    assert (BINARY.target_noun, MULTI.target_noun) == ("class", "finding")
    assert (BINARY.default_target_text, MULTI.default_target_text) == ("predicted class", "top finding")


def test_hidden_labels_are_the_ones_not_presented():
    assert MULTI.hidden == ("Hernia",)
    assert BINARY.hidden == () and THREE.hidden == ()


def test_explain_targets_are_the_labels_or_the_findings_rows_in_table_order():
    decision = MULTI.decide([0.75, 0.1, 0.9])  # Effusion rel 0.58, Nodule rel 0.25; Hernia not shown
    assert MULTI.explain_targets(decision) == ["Effusion", "Nodule"]
    assert MULTI.explain_targets(None) == ["Effusion", "Nodule"]  # no rows: the presented findings
    assert BINARY.explain_targets(BINARY.decide([0.9, 0.1])) == ["NORMAL", "PNEUMONIA"]


@pytest.mark.parametrize("head, label, point", [
    (BINARY, "PNEUMONIA", 0.3), (BINARY, "NORMAL", None),  # the other label shares the one threshold
    (THREE, "COVID", None),  # argmax: no operating point at all
    (MULTI, "Nodule", 0.2), (MULTI, "Hernia", 0.5),
])
def test_only_a_label_with_its_own_operating_point_can_be_recalibrated(head, label, point):
    assert head.own_operating_point(label) == (None if point is None else pytest.approx(point))


def test_negative_name_is_the_other_label_only_for_a_binary_softmax_positive():
    assert BINARY.negative_name("PNEUMONIA") == "NORMAL"
    assert BINARY.negative_name("NORMAL") == "not NORMAL"
    assert THREE.negative_name("COVID") == "not COVID"
    assert MULTI.negative_name("Effusion") == "not Effusion"


def test_card_fields_store_a_label_where_its_card_keeps_it_and_leave_the_original_alone():
    assert BINARY.card_fields("PNEUMONIA", 1.5, 0.4, {}) == {"temperature": 1.5, "threshold": 0.4}
    fields = MULTI.card_fields("Effusion", 2.0, 0.6, FINDINGS)
    assert fields["findings"]["Effusion"] == {"temperature": 2.0, "threshold": 0.6, "test": {"auc": 0.8}}
    assert fields["findings"]["Nodule"] == {"threshold": 0.2}
    assert FINDINGS["Effusion"]["threshold"] == 0.7  # a deep copy: the card's findings are not changed
    assert fields["findings"]["Effusion"]["test"] is not FINDINGS["Effusion"]["test"]


def test_require_per_finding_refuses_a_softmax_head_and_says_what_to_use():
    MULTI.require_per_finding("m", "the dataset audit")  # no error
    with pytest.raises(ValueError, match="model 'm' has a softmax head .*: use the dataset audit"):
        BINARY.require_per_finding("m", "the dataset audit")


@pytest.mark.parametrize("head, why", [(BINARY, None), (THREE, None), (MULTI, "has a sigmoid head"),
                                       (Head.softmax(["only"], "only"), "has a single output")])
def test_no_difference_reason_says_why_a_logit_difference_does_not_set_the_probability(head, why):
    assert head.no_difference_reason == why
