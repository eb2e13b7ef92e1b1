"""What the user sees of the out-of-distribution gate: Analyze warning, Batch columns, PDF flag."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from test_pages import make_weights, page, png_bytes, table_with, texts, upload, weights_env


def noise_png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (96, 96), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def fit_tiny_gate(folder) -> None:
    """Fit the CXR test model's gate on png_bytes images (seeds 1000+) and record it in its card."""
    from medcnn.io import read_image
    from medcnn.models import ModelCard, load_model
    from medcnn.ood import OODGate
    from medcnn.ood.features import FeatureExtractor, default_layers
    from medcnn.ood.validate import features_of
    from medcnn.preprocess import Pipeline

    model, card = load_model(folder / "cxr_pneumonia.json", device="cpu")
    pipe = Pipeline.from_config(card.preprocessing)
    extract = FeatureExtractor(model, default_layers(card.architecture), grid=3)
    fit = [read_image(png_bytes(96, seed=1000 + i)) for i in range(60)]
    val = [read_image(png_bytes(96, seed=2000 + i)) for i in range(40)]
    gate = OODGate.fit(features_of(extract, pipe, fit), features_of(extract, pipe, val), extract.layers, 3,
                       components=16)
    card = ModelCard.load(folder / "cxr_pneumonia.json")
    card.ood = {"file": "cxr_pneumonia.ood.pt", "sha256": gate.save(folder / "cxr_pneumonia.ood.pt"),
                "caution_threshold": gate.caution, "refuse_threshold": gate.refuse,
                "measured": {"in_distribution": {"tiny val": {"n": 40, "flagged": 0.025, "outside": 0.0}},
                             "outside": {"noise": {"n": 5, "flagged": 1.0, "outside": 1.0}}}}
    card.save(folder / "cxr_pneumonia.json")


@pytest.fixture(scope="module")
def gated_weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("gated_weights"))
    fit_tiny_gate(folder)
    with weights_env(folder):
        yield folder


def test_flagged_upload_shows_the_warning_and_no_finding(gated_weights):
    at = upload(page("pages/1_Analyze.py"), [("image", noise_png(), "application/octet-stream")])
    assert at.error and "Not analysed" in at.error[0].value and "unlike anything" in at.error[0].value
    body = texts(at)
    assert "Decision: not analysed" in body
    assert "Decision: NORMAL" not in body and "Decision: PNEUMONIA" not in body
    assert not at.metric  # no probabilities presented as a result
    assert any("no explanation" in str(getattr(i, "caption", "")) for i in at.get("imgs")) or \
        "Model input" in [s.value for s in at.subheader]


def test_in_distribution_upload_is_answered_without_a_warning(gated_weights):
    at = upload(page("pages/1_Analyze.py"), [("image", png_bytes(96, seed=3001), "image/png")])
    assert not at.error
    assert not [w for w in at.warning if "unusual" in w.value]
    assert "Decision: " in texts(at) and "not analysed" not in texts(at)
    assert len(at.metric) == 2


def test_batch_table_and_csv_carry_the_flag(gated_weights):
    from medcnn.app.batch import BatchItem, rows_to_csv, score_items, table_row

    good, bad = score_items([BatchItem("good.png", png_bytes(96, seed=3002)), BatchItem("noise.png", noise_png(1))])
    good_row, bad_row = table_row(good), table_row(bad)
    assert good_row["ood_level"] == "ok" and good_row["decision"] in ("NORMAL", "PNEUMONIA")
    assert bad_row["ood_level"] == "outside" and bad_row["decision"] == "not analysed"
    assert bad_row["probability"] == "not shown" and bad.heatmap is None and bad_row["ood_reasons"]
    csv = rows_to_csv([good_row, bad_row]).decode()
    assert csv.splitlines()[0].count("ood_level") == 1 and "ood_score" in csv and "not analysed" in csv

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.png", png_bytes(96, seed=3003))
        z.writestr("b.png", noise_png(2))
    at = upload(page("pages/2_Batch.py"), [("cases.zip", archive.getvalue(), "application/zip")])
    table = table_with(at, "ood_level")
    assert sorted(table["ood_level"]) == ["ok", "outside"]


def test_pdf_report_carries_the_flag(gated_weights):
    from pypdf import PdfReader

    from medcnn.inference import Predictor
    from medcnn.io import read_image
    from medcnn.visualize.report import build_report

    predictor = Predictor(gated_weights / "cxr_pneumonia.json")
    img = read_image(noise_png(3))
    pred = predictor.predict(img)
    assert pred.ood.withheld
    pdf = build_report(predictor.card, pred, pred.pipeline_result.display, None, meta=img.meta)
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())
    assert "Decision: not analysed" in text and "Not analysed: this image is outside what the model reads" in text
    assert "unlike anything" in text


def test_model_card_page_shows_the_gate_rates(gated_weights):
    at = page("pages/3_Model_card.py")
    assert "Out-of-distribution gate" in [s.value for s in at.subheader]
    table = table_with(at, "not analysed %")
    assert set(table["expected"]) == {"should be read", "should be flagged"}
    assert "no image-based out-of-distribution gate" in texts(at)  # the CT test model has none
