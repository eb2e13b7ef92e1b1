"""Probability-aware display data: operating point, call, notice; and the app's explain_analysis."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from medcnn import models, preprocess
from medcnn.explain import Explanation, at_operating_point, judged_by_head
from medcnn.inference import Prediction, Predictor
from medcnn.models.card import ModelCard
from medcnn.models.head import Head
from medcnn.ood import OODResult



def _exp(heat: float = 1.0) -> Explanation:
    h = np.full((4, 4), heat, np.float32)
    return Explanation(heatmap=h, attribution=h, method="gradcam", target=1,
                       params={"objective": "logit difference (PNEUMONIA - NORMAL)", "empty_map": heat == 0.0})


def test_operating_point_of_each_label():
    head = Head.softmax(["NORMAL", "PNEUMONIA"], "PNEUMONIA", threshold=0.25)
    assert head.operating_point("PNEUMONIA") == 0.25
    assert head.operating_point("NORMAL") == 0.75
    assert Head.softmax(["a", "b", "c"], "a", threshold=0.3).operating_point("b") is None
    with pytest.raises(ValueError, match="not one of"):
        head.operating_point("OTHER")


@pytest.mark.parametrize("head, probs, label, op, called", [
    (Head.softmax(["NORMAL", "PNEUMONIA"], "PNEUMONIA", threshold=0.25), [0.7, 0.3], "PNEUMONIA", 0.25, True),
    (Head.softmax(["NORMAL", "PNEUMONIA"], "PNEUMONIA", threshold=0.25), [0.7, 0.3], "NORMAL", 0.75, False),
    (Head.softmax(["NORMAL", "PNEUMONIA"], "PNEUMONIA", threshold=0.25), [0.8, 0.2], "NORMAL", 0.75, True),
    (Head.sigmoid(["Effusion", "Mass"], "Effusion", {"Mass": {"threshold": 0.1}}), [0.4, 0.1], "Mass", 0.1, True),
    (Head.sigmoid(["Effusion", "Mass"], "Effusion", {"Mass": {"threshold": 0.1}}), [0.4, 0.1], "Effusion", 0.5, False),
    (Head.sigmoid(["Effusion", "Mass"], "Effusion", {"Mass": {"threshold": 0.1, "shown": False}}),
     [0.4, 0.9], "Mass", 0.1, False),  # a finding the card does not present is never called
])
def test_judged_by_head_takes_the_point_and_the_call_from_the_decision_rule(head, probs, label, op, called):
    e = judged_by_head(_exp(), head, probs, label)
    assert e.probability == pytest.approx(probs[head.index(label)])
    assert e.operating_point == pytest.approx(op) and e.called is called
    assert (e.notice is None) is called


def test_below_the_operating_point_says_so():
    e = at_operating_point(_exp(), 0.12, 0.27, label="PNEUMONIA")
    assert e.probability == 0.12 and e.operating_point == 0.27 and e.called is False
    assert e.below_operating_point is True
    assert e.notice == ("The model does not call PNEUMONIA on this image (P(PNEUMONIA) = 0.120, below the "
                        "operating point 0.270). The map shows what raises the logit difference "
                        "(PNEUMONIA - NORMAL) here; it is not a finding.")
    assert _exp().probability is None and _exp().below_operating_point is None  # nothing attached


def test_called_with_a_map_needs_no_notice_and_an_empty_map_does():
    assert at_operating_point(_exp(), 0.9, 0.27, label="PNEUMONIA").notice is None
    empty = at_operating_point(_exp(0.0), 0.9, 0.27, label="PNEUMONIA")
    assert empty.called and "but this map is empty" in empty.notice and "as a whole" in empty.notice
    both = at_operating_point(_exp(0.0), 0.1, 0.27, label="PNEUMONIA")
    assert "does not call" in both.notice and "the map is empty" in both.notice


def test_the_predictions_own_decision_wins():
    # P(NORMAL) exactly at 1 - threshold: the binary rule calls PNEUMONIA, not NORMAL.
    e = at_operating_point(_exp(), 0.75, 0.75, called=False, label="NORMAL")
    assert e.below_operating_point
    assert at_operating_point(_exp(), 0.2, None, called=True).called
    with pytest.raises(ValueError, match="operating_point or called"):
        at_operating_point(_exp(), 0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        at_operating_point(_exp(), 1.5, 0.5)


@pytest.fixture()
def card_and_png(tmp_path):
    torch.manual_seed(0)
    model = models.create_model("tinyresnet", num_classes=2, in_chans=1)
    card = ModelCard(name="tiny", architecture="tinyresnet", modality="CXR", labels=["normal", "pneumonia"],
                     positive_label="pneumonia", input_size=(32, 32),
                     preprocessing=preprocess.default_config("CXR", size=32),
                     target_layer=models.default_target_layer("tinyresnet"), threshold=0.4)
    path = models.save_checkpoint(model, card, tmp_path / "tiny.pt")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40), dtype=np.uint8)).save(buf, "PNG")
    return str(path), buf.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_explain_analysis_attaches_the_decision(card_and_png):
    from medcnn.app import state

    card_path, data = card_and_png
    record = state.analyze_upload(state.digest(data), data, card_path)
    pred = record.prediction
    for target in ("normal", "pneumonia"):
        e = state.explain_analysis(record, "gradcam", target)
        assert e.probability == pytest.approx(pred.probabilities[target])
        assert e.called == (pred.label == target)
        assert e.operating_point == pytest.approx(0.4 if target == "pneumonia" else 0.6)
        other = "normal" if target == "pneumonia" else "pneumonia"
        assert e.params["objective"] == f"logit difference ({target} - {other})"
        assert (e.notice is not None) == (not e.called or e.empty)
    single = state.explain_analysis(record, "gradcam", "pneumonia", "logit")
    assert single.params["objective"] == "pneumonia logit"



def _prediction(head: Head, logits) -> Prediction:
    """The serving path's own Prediction for ``logits`` (:meth:`Predictor._decide`), without a network."""
    card = SimpleNamespace(head_rule=head, labels=list(head.labels), name="m")
    return Predictor._decide(SimpleNamespace(card=card), np.asarray([logits], np.float64), 0.0, [None],
                             [OODResult()])[0]


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


_SOFTMAX = Head.softmax(["NORMAL", "PNEUMONIA"], "PNEUMONIA", temperature=0.7, threshold=0.25)
_SIGMOID = Head.sigmoid(["Effusion", "Mass", "Nodule"], "Effusion",
                        {"Mass": {"threshold": 0.1}, "Nodule": {"threshold": 0.3, "shown": False}})
#: logits that put labels at (or a rounding error from) their operating points
_AT_THE_POINT = {"softmax": [0.0, 0.7 * _logit(0.25)], "sigmoid": [_logit(0.5), _logit(0.1), _logit(0.3)]}


@pytest.mark.parametrize("head", [_SOFTMAX, _SIGMOID], ids=["softmax", "sigmoid"])
def test_a_prediction_and_its_probabilities_cannot_disagree(head):
    rng = np.random.default_rng(0)
    grid = [rng.normal(0, 3, len(head.labels)) for _ in range(40)] + [np.array(_AT_THE_POINT[head.kind])]
    for z in grid:
        pred = _prediction(head, z)
        probs = list(pred.probabilities.values())
        for label in head.labels:
            by_pred = judged_by_head(_exp(), head, pred, label)
            by_probs = judged_by_head(_exp(), head, probs, label)
            assert (by_pred.called, by_pred.probability, by_pred.operating_point, by_pred.notice) == (
                by_probs.called, by_probs.probability, by_probs.operating_point, by_probs.notice)
            assert by_pred.called == (label in pred.called)


def test_the_prediction_decides_not_the_probabilities_again():
    # a prediction is taken at its word: the call is its decision, the probability its own
    pred = _prediction(_SOFTMAX, [0.0, 2.0])
    assert pred.called == ["PNEUMONIA"]
    pred.called = ["NORMAL"]  # a decision the probabilities alone would not give
    e = judged_by_head(_exp(), _SOFTMAX, pred, "NORMAL")
    assert e.called is True and e.probability == pytest.approx(pred.probabilities["NORMAL"])
    assert judged_by_head(_exp(), _SOFTMAX, list(pred.probabilities.values()), "NORMAL").called is False
