"""One presentation of a result (medcnn.visualize.presentation): the words of pages, tables and the PDF."""
from __future__ import annotations

import io

import numpy as np
import pytest

from medcnn.inference import Prediction
from medcnn.models.card import ModelCard
from medcnn.ood.gate import OODResult
from medcnn.visualize import presentation as pr

pypdf = pytest.importorskip("pypdf")

UNUSUAL = OODResult(level="unusual", score=3.0, reasons=["the image is darker than the model's training images"])
OUTSIDE = OODResult(level="outside", score=40.0, reasons=["the image is unlike anything this model saw"])
RAW_NAMES = ("empty_map", "precision_floor", "converged", "delta", "rel_delta", "clip_percentile")


def softmax_card(threshold: float = 0.6) -> ModelCard:
    return ModelCard(name="ct_covid", architecture="simplecnn", modality="CT", labels=["NonCOVID", "COVID"],
                     positive_label="COVID", input_size=(32, 32), preprocessing={}, target_layer="block3",
                     threshold=threshold, intended_use="Tests only.", limitations=["Random weights."])


def findings_card() -> ModelCard:
    findings = {"Effusion": {"threshold": 0.7}, "Nodule": {"threshold": 0.2}, "Pneumothorax": {"threshold": 0.5}}
    return ModelCard(name="cxr_findings", architecture="simplecnn", modality="CXR", labels=list(findings),
                     positive_label="Effusion", input_size=(32, 32), preprocessing={}, target_layer="block3",
                     head="sigmoid", findings=findings, intended_use="Tests only.", limitations=["Random weights."])


def predict(card: ModelCard, probabilities: list[float], ood: OODResult | None = None) -> Prediction:
    """A prediction decided by the card's own head, as the serving path makes it."""
    d = card.head_rule.decide(probabilities)
    return Prediction(dict(zip(card.labels, probabilities)), [0.0] * len(card.labels), d.label, d.positive_prob,
                      d.above_threshold, d.threshold, card.name, 0.01, ood=ood or OODResult(),
                      findings=d.findings, called=d.called)


# ----------------------------------------------------------------------------- decision and probability
def test_softmax_decision_names_the_positive_probability_against_the_threshold():
    card = softmax_card()
    pred = predict(card, [0.472, 0.528])
    assert pred.label == "NonCOVID"
    assert pr.decision_line(card, pred) == "Decision: NonCOVID · P(COVID) = 0.528, below the threshold 0.600"
    above = predict(card, [0.3, 0.7])
    assert pr.probability_text(card, above) == "P(COVID) = 0.700, at or above the threshold 0.600"


def test_a_card_says_a_slice_level_negative_in_its_own_words_not_as_a_finding_about_the_patient():
    card = softmax_card()
    card.wording = {"NonCOVID": "No COVID-19 pattern on this slice (one slice cannot rule it out)"}
    below, above = predict(card, [0.9, 0.1]), predict(card, [0.1, 0.9])
    assert below.called == ["NonCOVID"]  # the data keeps the label; only the words change
    assert pr.decision_line(card, below) == ("Decision: No COVID-19 pattern on this slice (one slice cannot rule it "
                                             "out) · P(COVID) = 0.100, below the threshold 0.600")
    assert pr.decision_parts(card, above)[0] == "COVID"  # a label without wording is said as it is
    assert pr.decision_parts(card, predict(card, [0.9, 0.1], OUTSIDE))[0] == "not analysed"
    assert card.contract.wording == card.wording


def test_a_card_caveat_is_said_for_its_input_kind_only_and_never_for_a_withheld_image():
    from medcnn.io import ImageMeta

    card = softmax_card()
    card.caveats = {"hounsfield": "Not shown to work on scanner slices."}
    scanner = ImageMeta(source_format="dicom", rows=8, columns=8, modality="CT")
    picture = ImageMeta(source_format="png", rows=8, columns=8)
    film = ImageMeta(source_format="dicom", rows=8, columns=8, modality="CR")
    assert [m.input_kind for m in (scanner, picture, film)] == ["hounsfield", "picture", "dicom"]
    pred = predict(card, [0.3, 0.7])
    assert pr.caveat(card, pred, scanner) == "Not shown to work on scanner slices."
    assert pr.caveat(card, pred, picture) is None and pr.caveat(card, pred, film) is None
    assert pr.caveat(card, predict(card, [0.3, 0.7], OUTSIDE), scanner) is None  # no result to qualify
    assert pr.caveat(card, pred, None) is None and pr.caveat(softmax_card(), pred, scanner) is None


def test_caveats_round_trip_through_the_card_file_and_unknown_input_kinds_are_refused(tmp_path):
    from medcnn.models.card import CardError

    card = softmax_card()
    card.caveats = {"hounsfield": "Not shown to work on scanner slices."}
    assert ModelCard.load(card.save(tmp_path / "c.json")).caveats == card.caveats
    assert "caveats" not in softmax_card().to_dict()  # written only when set: older cards keep their files
    with pytest.raises(CardError, match="input kind.*hounsfield, dicom, picture"):
        ModelCard(name="x", architecture="simplecnn", modality="CT", labels=["A", "B"], positive_label="B",
                  input_size=(8, 8), preprocessing={}, target_layer="block3", caveats={"mri": "?"})


def test_multilabel_decision_counts_findings_at_or_above_their_operating_points():
    card = findings_card()
    pred = predict(card, [0.6, 0.4, 0.5])  # Nodule >= 0.2 and Pneumothorax >= 0.5; Effusion < 0.7
    assert pr.decision_parts(card, pred) == (pred.label, "2 of 3 findings at or above their operating points")
    assert set(pred.label.split(", ")) == {"Nodule", "Pneumothorax"}


def test_a_withheld_result_shows_no_decision_and_no_probability():
    card = softmax_card()
    pred = predict(card, [0.2, 0.8], OUTSIDE)
    line = pr.decision_line(card, pred)
    assert line.startswith("Decision: not analysed") and "P(COVID)" not in line and "0.800" not in line
    assert pr.batch_probability(card, pred) == "not shown" and pr.decision(pred) == "not analysed"


def test_caution_text_of_an_unusual_image():
    pred = predict(softmax_card(), [0.5, 0.5], UNUSUAL)
    assert pr.caution_text(pred) == ("Caution: this image is unusual for this model. The image is darker than "
                                     "the model's training images.")
    assert pr.caution_text(predict(softmax_card(), [0.5, 0.5])) is None
    assert pr.ood_heading(OUTSIDE)[0].startswith("Not analysed")


# ----------------------------------------------------------------------------- Batch cells
def test_batch_probability_names_its_probability():
    card = softmax_card()
    pred = predict(card, [0.472, 0.528])  # the table said "NonCOVID 0.528": that 0.528 is P(COVID)
    assert pr.decision(pred) == "NonCOVID"
    assert pr.batch_probability(card, pred) == "P(COVID) = 0.528 (threshold 0.600)"


def test_batch_probability_of_a_multilabel_row_is_never_empty():
    card = findings_card()
    pred = predict(card, [0.6, 0.4, 0.3])
    cell = pr.batch_probability(card, pred)
    assert cell == ("1 of 3 findings at or above their operating points; top P(Nodule) = 0.400 "
                    "(operating point 0.200)")


def test_batch_caution_and_thumbnail_caption_carry_the_caution():
    card = softmax_card()
    flagged, clean = predict(card, [0.3, 0.7], UNUSUAL), predict(card, [0.3, 0.7])
    assert pr.batch_caution(flagged).startswith("Caution: this image is unusual") and pr.batch_caution(clean) == ""
    caption = pr.thumbnail_caption("a.png", card, flagged, "COVID", 0.7)
    assert caption == "a.png: COVID (P(COVID) = 0.70) · ⚠ unusual image: read with caution"
    assert "⚠" not in pr.thumbnail_caption("a.png", card, clean, "COVID", 0.7)
    mapped = pr.thumbnail_caption("b.png", findings_card(), predict(findings_card(), [0.6, 0.1, 0.3]), "Effusion", 0.6)
    assert "map: Effusion" in mapped


# ----------------------------------------------------------------------------- maps
def test_map_scaling_rule():
    assert pr.map_scale(0.62) == 0.62 and pr.map_scale(0.62, by_probability=False) is None
    assert pr.map_scale(None) is None and pr.map_scale(1.2) == 1.0
    assert pr.scale_caption(0.62) == "scaled by P = 0.62" and pr.scale_caption(None) == "full contrast"


def test_map_notice_prefers_the_explanations_words_and_says_an_empty_map_in_words():
    class Expl:
        notice = "The model calls COVID, but this map is empty."
        params = {"empty_map": True}

    assert pr.map_notice(Expl()) == Expl.notice
    assert pr.map_notice(params={"empty_map": True}) == pr.EMPTY_MAP_NOTICE
    assert pr.map_notice(params={"empty_map": False}) is None


# ----------------------------------------------------------------------------- PDF
def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(p.extract_text().split()) for p in reader.pages)


IG_PARAMS = {"objective": "logit of Nodule", "display": "positive", "clip_percentile": 99.5, "empty_map": True,
             "delta": 0.0012, "rel_delta": 0.001, "converged": True, "precision_floor": 1e-6, "steps": 64}


def test_pdf_puts_the_caution_above_the_findings_and_no_parameter_names_in_the_body():
    from medcnn.visualize.report import build_report

    card = findings_card()
    pred = predict(card, [0.6, 0.4, 0.3], UNUSUAL)
    display = np.full((32, 32), 0.5, np.float32)
    over = np.zeros((32, 32, 3), np.uint8)
    text = pdf_text(build_report(card, pred, display, over, method="Integrated Gradients", method_params=IG_PARAMS,
                                 target="Nodule"))
    caution = text.index("Caution: this image is unusual for this model.")
    assert caution < text.index("Decision: Nodule") < text.index("Finding Probability Operating point Call")
    assert pr.EMPTY_MAP_NOTICE.split(":")[0] in text  # the empty map said in words
    details = text.index("Method details: Integrated Gradients")
    assert details > text.index("Intended use")  # at the end, after the model card
    body = text[:details]
    for name in RAW_NAMES:
        assert name not in body, f"raw parameter name {name!r} in the report body"
    assert "empty_map" not in text and "Reached its error tolerance: yes" in text[details:]


def test_pdf_prints_the_explanations_notice_for_an_empty_map_of_a_called_finding():
    from medcnn.visualize.report import build_report

    card = findings_card()
    pred = predict(card, [0.6, 0.4, 0.3])
    notice = "The model calls Nodule (P(Nodule) = 0.400), but this map is empty: no region raises the score."
    text = pdf_text(build_report(card, pred, np.zeros((32, 32), np.float32), np.zeros((32, 32, 3), np.uint8),
                                 method="Grad-CAM", method_params={"empty_map": True, "layer": "block3"},
                                 target="Nodule", notice=notice))
    assert f"About the map: {notice}" in text
    assert "empty_map" not in text and "True" not in text


def test_series_summary_row_uses_the_same_words():
    from medcnn.visualize.series import SeriesCase, summary_row

    card = softmax_card()
    pred = predict(card, [0.472, 0.528], UNUSUAL)
    row = summary_row(SeriesCase(1, "abcd1234", card, pred, np.zeros((8, 8), np.float32)))
    assert row["Decision / findings"] == "NonCOVID"
    assert row["Probability"] == pr.batch_probability(card, pred)
    assert row["Out-of-distribution flag"] == pr.caution_text(pred)
