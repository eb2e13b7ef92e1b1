"""A multi-label (sigmoid head) model in the app: findings table, explanation target, batch columns,
PDF report and per-finding model card, beside the softmax models whose display stays as it was.

The findings model is a tiny SimpleCNN whose last layer is nearly constant (weights x 0.01, biases
set), so every image gets the same designed probabilities: sorted by probability the findings read
Effusion, Nodule, Pneumothorax, but relative to their operating points Nodule comes first.
"""
from __future__ import annotations

import dataclasses
import io
import re
import zipfile

import numpy as np
import pytest
import torch

from test_pages import make_weights, page, png_bytes, table_with, texts, upload, weights_env

pypdf = pytest.importorskip("pypdf")

#: finding -> (designed calibrated probability, temperature, operating point, shown)
DESIGN = {"Effusion": (0.6, 1.5, 0.7, True), "Nodule": (0.4, 1.0, 0.2, True),
          "Pneumothorax": (0.3, 1.0, 0.5, True), "Hernia": (0.9, 1.0, 0.5, False)}
#: presented findings by probability relative to the operating point (Nodule 0.625, Effusion 0.43, Pneumothorax 0.3)
ORDER = ["Nodule", "Effusion", "Pneumothorax"]
HIDDEN_REASON = "test AUC 0.55 (95% CI 0.40-0.70, 3 positives): the lower bound is below 0.6"


def findings_card(name: str = "cxr_findings", with_test: bool = True):
    from medcnn.models.card import ModelCard
    from medcnn.preprocess import default_config

    findings = {n: {"temperature": t, "threshold": thr, "shown": shown,
                    "reason": "test AUC 0.80 (95% CI 0.65-0.90)" if shown else HIDDEN_REASON}
                for n, (_, t, thr, shown) in DESIGN.items()}
    summary = {n: {"auc": 0.8 if shown else 0.55, "auc_ci": [0.65, 0.9] if shown else [0.4, 0.7],
                   "n_pos": 12 if shown else 3, "n_neg": 28, "sensitivity": 0.75, "specificity": 0.625,
                   "ece": 0.042, "threshold": thr} for n, (_, _, thr, shown) in DESIGN.items()}
    test = {"model": name, "n": 40, "mean_auc": 0.7375, "findings": summary,
            "per_finding": {n: {"n": 40, "auc": s["auc"], "ci": {"recall": [0.5, 0.9], "specificity": [0.4, 0.8]}}
                            for n, s in summary.items()},
            "scores": {n: {"y": [1, 0, 1, 0], "prob": [0.9, 0.7, 0.4, 0.1]} for n in DESIGN}}
    return ModelCard(
        name=name, architecture="simplecnn", modality="CXR", labels=list(DESIGN), positive_label="Effusion",
        input_size=(32, 32), preprocessing=default_config("CXR", 32), target_layer="block3",
        dicom_modalities=["CR", "DX"], head="sigmoid", findings=findings,
        training={"dataset": "tiny synthetic multi-label test model"},
        metrics={"test": test} if with_test else {"val": {"model": name, "mean_auc": 0.7, "findings": summary}},
        intended_use="Tests of the multi-label display only.",
        limitations=["Random weights.", *(f"Findings limitation {i}: " + "word " * (4 + i) for i in range(25))],
    )


def save_findings_model(folder, name: str = "cxr_findings", with_test: bool = True):
    from medcnn.models import create_model, save_checkpoint

    torch.manual_seed(7)
    model = create_model("simplecnn", len(DESIGN)).eval()
    with torch.no_grad():  # nearly constant outputs: logit = T * logit(p) per finding
        model.fc2.weight.mul_(0.01)
        model.fc2.bias.copy_(torch.tensor([t * np.log(p / (1 - p)) for p, t, _, _ in DESIGN.values()]))
    return save_checkpoint(model, findings_card(name, with_test), folder / f"{name}.pt")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("findings_weights"))
    save_findings_model(folder)
    save_findings_model(folder, "cxr_findings_untested", with_test=False)
    with weights_env(folder):
        yield folder


@pytest.fixture(scope="module")
def predictor(weights):
    from medcnn.inference import Predictor

    return Predictor(weights / "cxr_findings.json", device="cpu")


def analyze_with_findings_model(raw: bytes, name: str = "chest.png"):
    at = page("pages/1_Analyze.py")
    at.selectbox(key="model_choice").set_value("cxr_findings").run()
    return upload(at, (name, raw, "image/png"))


def target_box(at):
    return next(s for s in at.sidebar.selectbox if s.label == "Target finding")


def overlay_caption(at) -> str:
    return next(c for img in at.image for c in img.captions if "overlay" in c)


def knee_cr_dicom() -> bytes:
    """A CR DICOM whose header says the body part is a knee: outside what a chest model reads."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality, ds.BodyPartExamined = "CR", "KNEE"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the designed model
def test_designed_prediction(predictor):
    from medcnn.io import read_image

    pred = predictor.predict(read_image(png_bytes(seed=11)))
    assert [r["name"] for r in pred.findings] == ORDER  # Hernia (P = 0.9) is not presented
    assert [r["probability"] for r in pred.findings] == pytest.approx([0.4, 0.6, 0.3], abs=0.02)
    assert pred.label == "Nodule" and pred.probabilities["Hernia"] == pytest.approx(0.9, abs=0.02)


# ----------------------------------------------------------------------------- analyze
def test_auto_picks_the_findings_model_and_the_pneumonia_model_stays_one_choice_away(weights):
    at = page("pages/1_Analyze.py")
    assert {"cxr_findings", "cxr_pneumonia"} <= set(at.selectbox(key="model_choice").options)
    upload(at, ("chest.png", png_bytes(seed=12), "image/png"))  # auto: the default chest X-ray model
    assert not at.error
    assert list(table_with(at, "finding")["finding"]) == ORDER and not at.metric
    assert any(s.label == "Target finding" for s in at.sidebar.selectbox)

    at.selectbox(key="model_choice").set_value("cxr_pneumonia").run()  # the single pneumonia decision
    body = texts(at)
    assert "cxr_pneumonia" in body and "P(PNEUMONIA)" in body and len(at.metric) == 2
    assert not [d for d in at.dataframe if "finding" in d.value.columns]
    assert any(s.label == "Target class" for s in at.sidebar.selectbox)


def test_findings_table_sorted_by_relative_without_the_hidden_finding(weights, predictor):
    at = analyze_with_findings_model(png_bytes(seed=12))
    assert not at.error
    table = table_with(at, "finding")
    assert list(table["finding"]) == ORDER and "Hernia" not in set(table["finding"])
    assert list(table["relative"]) == sorted(table["relative"], reverse=True)
    assert list(table["probability"]) != sorted(table["probability"], reverse=True)  # not sorted by probability
    calls = dict(zip(table["finding"], table["call"]))
    assert calls == {"Nodule": "above operating point", "Effusion": "below operating point",
                     "Pneumothorax": "below operating point"}
    assert dict(zip(table["finding"], table["operating point"])) == pytest.approx(
        {"Nodule": 0.2, "Effusion": 0.7, "Pneumothorax": 0.5})
    body = texts(at)
    assert "Not shown: Hernia — the model cannot be shown to detect them on held-out data" in body
    assert "Decision: Nodule" in body and "1 of 3 findings" in body
    assert not at.metric  # no single-label probability tiles


def test_choosing_another_finding_changes_the_explained_target(weights):
    at = analyze_with_findings_model(png_bytes(seed=13))
    box = target_box(at)
    assert box.options == ORDER and box.value == "Nodule"  # default: the top row
    assert "finding Nodule: its logit, which sets P(Nodule) = 0.40" in overlay_caption(at)
    assert "operating point 0.20, above" in overlay_caption(at)
    box.set_value("Effusion").run()
    assert not at.exception and not at.error
    caption = overlay_caption(at)
    assert "finding Effusion: its logit, which sets P(Effusion) = 0.60" in caption
    assert "operating point 0.70, below" in caption and "Nodule" not in caption


def test_gate_withholds_the_findings_table(weights):
    at = page("pages/1_Analyze.py")
    at.selectbox(key="model_choice").set_value("cxr_findings").run()
    upload(at, ("knee", knee_cr_dicom(), "application/dicom"))
    assert at.error and "Not analysed" in at.error[0].value and "KNEE" in at.error[0].value
    body = texts(at)
    assert "Decision: not analysed" in body
    assert not [d for d in at.dataframe if "finding" in d.value.columns]
    assert "Not shown:" not in body and "Nodule" not in body
    assert not any(s.label == "Target finding" for s in at.sidebar.selectbox)


# ----------------------------------------------------------------------------- batch
def test_batch_csv_has_a_column_per_finding(weights):
    from medcnn.app.batch import BatchItem, rows_to_csv, score_items, table_row

    result = score_items([BatchItem("a.png", png_bytes(seed=14))], "cxr_findings")[0]
    row = table_row(result)
    assert row["error"] == "" and row["decision"] == "Nodule"
    # the probability cell names what it is: the count called and the top finding against its point
    assert row["probability"] == ("1 of 3 findings at or above their operating points; top P(Nodule) = 0.400 "
                                  "(operating point 0.200)")
    assert row["p_nodule"] == pytest.approx(0.4, abs=0.02) and "p_hernia" not in row
    assert row["findings_above_threshold"] == "Nodule" and "⚑" in row["flag"]
    assert result.target == "Nodule" and result.heatmap is not None
    header = rows_to_csv([row]).decode().splitlines()[0].split(",")
    assert header[header.index("flag") + 1:header.index("caution")] == [
        "p_effusion", "p_nodule", "p_pneumothorax", "findings_above_threshold"]

    softmax = table_row(score_items([BatchItem("b.png", png_bytes(seed=15))], "cxr_pneumonia")[0])
    assert list(softmax) == ["file", "modality", "model", "decision", "probability", "flag", "caution", "caveat",
                             "ood_level", "ood_score", "ood_reasons", "routed", "error"]  # one snake_case schema
    assert re.fullmatch(r"P\(PNEUMONIA\) = 0\.\d{3} \(threshold 0\.500\)", softmax["probability"])

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("c.png", png_bytes(seed=16))
        z.writestr("d.png", png_bytes(seed=17))
    at = page("pages/2_Batch.py")
    at.selectbox(key="batch_model_choice").set_value("cxr_findings").run()
    upload(at, [("cases.zip", archive.getvalue(), "application/zip")])
    assert not at.error
    table = table_with(at, "findings_above_threshold")
    assert list(table["findings_above_threshold"]) == ["Nodule", "Nodule"]
    assert {"p_effusion", "p_nodule", "p_pneumothorax"} <= set(table.columns)
    captions = [c for img in at.image for c in img.captions]
    assert captions == ["cases.zip/c.png: Nodule (P(Nodule) = 0.40) ⚑", "cases.zip/d.png: Nodule (P(Nodule) = 0.40) ⚑"]


# ----------------------------------------------------------------------------- case review
def test_case_review_shows_the_findings_and_maps_the_top_finding(weights):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("meeting/e.png", png_bytes(96, seed=19))
    at = page("pages/5_Case_review.py")
    at.selectbox(key="review_model_choice").set_value("cxr_findings").run()
    upload(at, [("cases.zip", archive.getvalue(), "application/zip")])
    assert not at.error
    table = table_with(at, "finding")
    assert list(table["finding"]) == ORDER
    assert any("Grad-CAM overlay · target Nodule (top finding)" in c for img in at.image for c in img.captions)
    summary = table_with(at, "Decision / findings")
    assert summary["Decision / findings"].iloc[0] == "Nodule"
    assert summary["Probability"].iloc[0].startswith("1 of 3 findings at or above their operating points")
    assert "Hernia" not in summary.to_csv()


# ----------------------------------------------------------------------------- PDF report
def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    n = len(reader.pages)
    text = " ".join(" ".join(p.extract_text().split()) for p in reader.pages)
    for k in range(1, n + 1):
        text = text.replace(f"medcnn analysis report · cxr_findings · Page {k} of {n}", " ")
    return " ".join(text.split())


def test_pdf_lists_the_findings_the_explained_finding_and_every_limitation(predictor):
    from medcnn.explain import explain
    from medcnn.io import read_image
    from medcnn.visualize import overlay
    from medcnn.visualize.report import build_report

    img = read_image(png_bytes(seed=18))
    pred = predictor.predict(img)
    expl = explain(predictor.model, pred.pipeline_result.tensor, predictor.card.labels.index("Effusion"), "gradcam",
                   layer="block3")
    over = overlay(pred.pipeline_result.display, expl.heatmap)
    text = pdf_text(build_report(predictor.card, pred, pred.pipeline_result.display, over, method="Grad-CAM",
                                 target="Effusion", meta=img.meta))
    assert "Decision: Nodule · 1 of 3 findings at or above their operating points" in text
    assert "Finding Probability Operating point Call" in text
    for name, p, thr, call in (("Nodule", 0.4, 0.2, "above"), ("Effusion", 0.6, 0.7, "below"),
                               ("Pneumothorax", 0.3, 0.5, "below")):
        assert f"{name} {pred.probabilities[name]:.3f} {thr:.3f} {call} operating point" in text
    assert text.index("Nodule 0.") < text.index("Effusion 0.") < text.index("Pneumothorax 0.")
    assert "Not shown: Hernia" in text and "Hernia 0." not in text
    assert "Explained finding: Effusion (the map explains its logit, which sets P(Effusion))" in text
    assert "target finding Effusion" in text
    assert "mean AUC 0.738" in text
    for item in predictor.card.limitations:  # the limitations section is complete
        assert " ".join(item.split()) in text, item

    withheld = dataclasses.replace(pred, ood=dataclasses.replace(pred.ood, level="outside",
                                                                 reasons=["the body part is KNEE"]))
    text = pdf_text(build_report(predictor.card, withheld, pred.pipeline_result.display, None, meta=img.meta))
    assert "Decision: not analysed" in text and "Finding Probability" not in text and "Nodule 0." not in text


# ----------------------------------------------------------------------------- model card
def test_model_card_page_shows_per_finding_rows(weights):
    at = page("pages/3_Model_card.py")
    assert not at.error
    tables = [d.value for d in at.dataframe if "finding" in d.value.columns and "AUC (95% CI)" in d.value.columns]
    assert len(tables) == 2  # the tested and the untested findings model
    tested = next(t for t in tables if "0.800 (95% CI 0.650-0.900)" in set(t["AUC (95% CI)"])).set_index("finding")
    assert list(tested.index) == list(DESIGN)
    assert tested.loc["Hernia", "shown"] == "no" and tested.loc["Hernia", "reason"] == HIDDEN_REASON
    assert tested.loc["Nodule", "shown"] == "yes" and tested.loc["Nodule", "positives"] == "12"
    assert tested.loc["Nodule", "sensitivity"] == "0.750 (95% CI 0.500-0.900)"
    assert tested.loc["Nodule", "ECE"] == "0.042" and tested.loc["Nodule", "operating point"] == "0.200"
    body = texts(at)
    assert "on the held-out test set" in body and "no test metrics are recorded in this card yet" in body
    assert "Tests of the multi-label display only." in body
    # confusion matrices of both softmax cards, ct_covid's 3 curves, and the tested findings model's 3 curves
    assert len(at.image) == 8
    at.selectbox(key="plot_finding_cxr_findings").set_value("Hernia").run()
    assert not at.exception and len(at.image) == 8
    # the softmax cards keep their single-label metrics table
    assert any("AUC" in t.columns and "0.750 (95% CI 0.500-0.900)" in set(t["AUC"]) for t in
               (d.value for d in at.dataframe))


def test_finding_metric_rows_without_any_metrics():
    from medcnn.visualize.findings import finding_metric_rows

    card = dataclasses.replace(findings_card(), metrics={})
    split, rows = finding_metric_rows(card)
    assert split is None and [r["finding"] for r in rows] == list(DESIGN)
    assert rows[0]["AUC (95% CI)"] == "n/a" and rows[3]["shown"] == "no"


def test_landing_page_row_of_the_findings_model(weights):
    at = page("app.py")
    df = at.table[0].value.set_index("model")  # a static table: long cells wrap
    assert df.loc["cxr_findings", "AUC (95% CI)"] == "mean 0.738 over 4 findings"
    assert "Hernia" not in df.loc["cxr_findings", "classes"]
    assert df.loc["cxr_pneumonia", "AUC (95% CI)"].startswith("0.750")


def test_recalibrate_page_offers_the_findings_models_with_a_finding_choice(weights):
    # site onboarding now serves multi-label cards: one finding's temperature and operating point
    at = page("pages/4_Recalibrate.py")
    assert set(at.selectbox(key="recal_model").options) == {"ct_covid", "cxr_pneumonia", "cxr_findings",
                                                            "cxr_findings_untested"}
    at.selectbox(key="recal_model").set_value("cxr_findings").run()
    assert not at.exception
    finding = at.selectbox(key="recal_finding")
    assert finding.value == "Effusion" and set(finding.options) == {"Effusion", "Nodule", "Pneumothorax", "Hernia"}
