"""Routing per image under Auto (:func:`medcnn.app.state.route_upload`): Analyze, Batch and Case review.

A PNG/JPEG carries no modality: when the chest X-ray model's gate finds it outside its scope, the CT
model is tried; a mixed set reaches each family's model; an unsupported modality (MR) is not analysed,
with the reason, not an error.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_pages import make_weights, page, png_bytes, table_with, texts, upload, weights_env


def ct_png(seed: int = 0, size: int = 96) -> bytes:
    """A synthetic axial CT slice as PNG: black air around a bright body disc with dark lungs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    r = 0.40 + rng.uniform(-0.03, 0.03)
    img = np.where(xx ** 2 + (yy / 0.8) ** 2 < r ** 2, 170.0, 5.0)
    for side in (-1, 1):
        img[((xx - side * 0.17) / 0.12) ** 2 + (yy / 0.22) ** 2 < 1] = 30.0
    img = (img + rng.normal(0, 6, img.shape)).clip(0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (96, 96), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def mr_small() -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("MR_small.dcm")).read_bytes()


def fit_gate(folder: Path, name: str, make) -> None:
    """Fit ``name``'s out-of-distribution gate on images from ``make(seed)`` and record it in its card."""
    from medcnn.io import read_image
    from medcnn.models import ModelCard, load_model
    from medcnn.ood import OODGate
    from medcnn.ood.features import FeatureExtractor, default_layers
    from medcnn.ood.validate import features_of
    from medcnn.preprocess import Pipeline

    model, card = load_model(folder / f"{name}.json", device="cpu")
    pipe = Pipeline.from_config(card.preprocessing)
    extract = FeatureExtractor(model, default_layers(card.architecture), grid=3)
    fit = [read_image(make(1000 + i)) for i in range(60)]
    val = [read_image(make(2000 + i)) for i in range(40)]
    gate = OODGate.fit(features_of(extract, pipe, fit), features_of(extract, pipe, val), extract.layers, 3,
                       components=16)
    card = ModelCard.load(folder / f"{name}.json")
    card.ood = {"file": f"{name}.ood.pt", "sha256": gate.save(folder / f"{name}.ood.pt"),
                "caution_threshold": gate.caution, "refuse_threshold": gate.refuse,
                "measured": {"in_distribution": {"tiny val": {"n": 40, "flagged": 0.0, "outside": 0.0}}}}
    card.save(folder / f"{name}.json")


@pytest.fixture(scope="module")
def two_gates(tmp_path_factory):
    """The tiny models, each with a gate: the CXR one fit on png_bytes, the CT one on ct_png."""
    folder = make_weights(tmp_path_factory.mktemp("routed_weights"))
    fit_gate(folder, "cxr_pneumonia", lambda s: png_bytes(96, seed=s))
    fit_gate(folder, "ct_covid", ct_png)
    with weights_env(folder):
        yield folder


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def test_ct_png_under_auto_is_read_by_the_ct_model_and_the_page_says_why(two_gates):
    at = upload(page("pages/1_Analyze.py"), [("slice.png", ct_png(3001), "image/png")])
    assert not at.error
    said = [i.value for i in at.info]
    assert ("Model ct_covid: auto-chosen: the chest X-ray model's gate found this image outside its scope; "
            "the CT model reads it.") in said
    body = texts(at)
    assert "Model **ct_covid**" in body and "Decision: not analysed" not in body
    assert [m.label for m in at.metric] == ["P(NonCOVID)", "P(COVID)"]


def test_cxr_png_under_auto_stays_with_the_chest_xray_model(two_gates):
    at = upload(page("pages/1_Analyze.py"), [("cxr.png", png_bytes(96, seed=3001), "image/png")])
    assert not at.error and not [i for i in at.info if "auto-chosen" in i.value]
    assert "Model **cxr_pneumonia** (simplecnn, auto-chosen for PNG/JPEG)" in texts(at)


def test_image_no_gate_accepts_is_not_analysed_with_the_closer_family(two_gates):
    from medcnn.app.state import route_upload
    from medcnn.app.state import digest

    data = noise_png(1)
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    routed = route_upload(digest(data), data)
    assert routed.prediction.ood.withheld and Path(routed.card_path).stem == "cxr_pneumonia"
    ratio = {}
    for name in ("cxr_pneumonia", "ct_covid"):
        ood = Predictor(two_gates / f"{name}.json").predict(read_image(data)).ood
        assert ood.withheld
        ratio[name] = ood.score / ood.refuse_threshold
    looks, model = ("a CT slice", "CT") if ratio["ct_covid"] < ratio["cxr_pneumonia"] else ("a chest X-ray",
                                                                                            "chest X-ray")
    hint = f"It looks more like {looks}: if it is one, choose the {model} model"
    assert routed.reason == f"no model's gate finds this image within its scope. {hint}"
    at = upload(page("pages/1_Analyze.py"), [("noise.png", data, "image/png")])
    assert "Decision: not analysed" in texts(at)
    assert f"{hint}." in at.error[0].value


def test_mixed_zip_in_batch_reaches_each_familys_model(two_gates):
    archive = zip_of([("cxr.png", png_bytes(96, seed=3002)), ("slice.png", ct_png(3002)),
                      ("slice2.png", ct_png(3003))])
    at = upload(page("pages/2_Batch.py"), [("mixed.zip", archive, "application/zip")])
    table = table_with(at, "model").set_index("file")
    assert table.loc["mixed.zip/cxr.png", "model"] == "cxr_pneumonia"
    assert list(table.loc[["mixed.zip/slice.png", "mixed.zip/slice2.png"], "model"]) == ["ct_covid", "ct_covid"]
    assert set(table["decision"]) <= {"NORMAL", "PNEUMONIA", "NonCOVID", "COVID"}
    assert "the CT model reads it" in table.loc["mixed.zip/slice.png", "routed"]


def test_mixed_zip_in_case_review_reaches_each_familys_model(two_gates):
    archive = zip_of([("cxr.png", png_bytes(96, seed=3004)), ("slice.png", ct_png(3004))])
    at = upload(page("pages/5_Case_review.py"), [("mixed.zip", archive, "application/zip")])
    table = table_with(at, "Model")
    assert list(table["Model"]) == ["cxr_pneumonia", "ct_covid"]
    assert "not analysed" not in " ".join(table["Decision / findings"])
    at.button(key="review_next").click().run()
    assert "auto-chosen: the chest X-ray model's gate found this image outside its scope" in texts(at)


def test_the_scoring_engine_routes_each_image_as_the_app_does(two_gates):
    from medcnn.app.state import digest, route_upload
    from medcnn.scoring import Scorer

    images = {"cxr.png": png_bytes(96, seed=3005), "slice.png": ct_png(3005), "noise.png": noise_png(2)}
    rows = {r["file"]: r for r in Scorer(weights_dir=two_gates, device="cpu").rows(list(images.items()))}
    assert [rows[name]["model"] for name in images] == ["cxr_pneumonia", "ct_covid", "cxr_pneumonia"]
    for name, data in images.items():
        routed = route_upload(digest(data), data)
        assert (Path(routed.card_path).stem, routed.prediction.decision) == (rows[name]["model"],
                                                                            rows[name]["decision"])
        assert rows[name]["routed"] == (f"{routed.how}; {routed.reason}" if routed.reason else routed.how)
        assert rows[name]["probabilities"] == pytest.approx(routed.prediction.probabilities, abs=1e-6)
    assert rows["slice.png"]["routed"].startswith("auto-chosen: the chest X-ray model's gate found")
    assert "It looks more like" in rows["noise.png"]["routed"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("plain_weights"))
    with weights_env(folder):
        yield folder


MR_REASON = "no model here reads MR images: the CT model reads CT, the chest X-ray model CR, DX, PNG and JPEG"


def test_mr_dicom_is_not_analysed_with_the_reason_not_an_error(weights):
    at = upload(page("pages/1_Analyze.py"), [("mr.dcm", mr_small(), "application/dicom")])
    assert not at.error  # not "Error while predicting"
    assert f"Decision: not analysed** · {MR_REASON}" in texts(at)
    assert "Not analysed: no model here reads this image." in at.warning[-1].value
    assert not at.metric and [s.value for s in at.subheader] == ["Prediction", "Image"]


def test_mr_dicom_in_batch_and_case_review_is_not_analysed(weights):
    from medcnn.app.batch import BatchItem, score_items, table_row

    row = table_row(score_items([BatchItem("mr.dcm", mr_small())])[0])
    assert (row["decision"], row["probability"], row["caution"], row["error"]) == ("not analysed", "not shown",
                                                                                      MR_REASON, "")
    at = upload(page("pages/5_Case_review.py"), [("mr.dcm", mr_small(), "application/dicom")])
    assert not at.error and not at.exception
    assert "## Decision: not analysed" in texts(at)
    assert MR_REASON[1:] in at.warning[-1].value
    table = table_with(at, "Decision / findings")
    assert list(table["Decision / findings"]) == [f"Could not be analysed: not analysed: {MR_REASON}"]


def test_ig_map_is_shown_smoothed_and_the_caption_says_so(weights):
    at = page("pages/1_Analyze.py")
    at.selectbox(key="method").set_value("integrated_gradients")
    upload(at, [("cxr.png", png_bytes(96, seed=3101), "image/png")])
    # SimpleCNN at 64 px: block3 is 16 x 16, a 4-px feature cell
    assert ("map shown smoothed: Gaussian, sigma 1 px (a quarter of the network's 4-px feature cell); display "
            "only, the attribution is unchanged") in texts(at)
