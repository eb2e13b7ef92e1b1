"""AppTest of every page of the Streamlit app, on tiny models in a temporary weights folder."""
from __future__ import annotations

import contextlib
import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


def make_weights(folder: Path) -> Path:
    """Tiny seeded CXR and CT models (SimpleCNN at 64 px) with cards in ``folder``; the CXR
    card's training data is a tiny labels.csv (8 PNGs, split test) in ``folder/data``."""
    from medcnn.models.card import ModelCard
    from medcnn.models import create_model, save_checkpoint
    from medcnn.preprocess import default_config

    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,split"]
    for i in range(8):
        (data / f"img{i}.png").write_bytes(png_bytes(64, seed=100 + i))
        lines.append(f"img{i}.png,{'PNEUMONIA' if i % 2 else 'NORMAL'},test")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")

    for i, (name, task, labels, modalities) in enumerate([
        ("cxr_pneumonia", "CXR", ["NORMAL", "PNEUMONIA"], ["CR", "DX"]),
        ("ct_covid", "CT", ["NonCOVID", "COVID"], ["CT"]),
    ]):
        torch.manual_seed(i)
        model = create_model("simplecnn", num_classes=2).eval()
        card = ModelCard(
            name=name, architecture="simplecnn", modality=task, labels=labels, positive_label=labels[1],
            input_size=(64, 64), preprocessing=default_config(task, 64), target_layer="block3",
            dicom_modalities=modalities, threshold=0.5,
            training={"dataset": f"tiny synthetic test model ({task})", "citation": "none (test)",
                      "data": [str(data / "labels.csv")] if task == "CXR" else []},
            metrics={"test": {"n": 10, "auc": 0.75, "auc_ci": [0.5, 0.9], "recall": 0.6, "specificity": 0.7,
                              "ci": {"recall": [0.3, 0.9]}, "labels": labels,
                              "confusion_matrix": [[4, 1], [2, 3]]},
                     "test_by_view_position": {"column": "view_position", "groups": {
                         "AP": {"n": 5, "auc": 0.7}, "PA": {"n": 5, "auc": 0.8}}}},
            intended_use="Tests only.", limitations=["Random weights."],
            experiments=[{"command": "test", "val_auc": 0.5}],
        )
        if task == "CT":  # per-image scores in the card: its curves need no data; a caveat for scanner DICOM
            card.caveats = {"hounsfield": "Scanner DICOM: this output was not validated on scanner slices."}
            card.metrics["test"]["scores"] = {"y": [1, 1, 0, 1, 1, 0, 0, 1, 0, 0],
                                              "prob": [0.9, 0.8, 0.7, 0.65, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05]}
        save_checkpoint(model, card, folder / f"{name}.pt")
    return folder


@contextlib.contextmanager
def weights_env(folder: Path):
    """Point the app at ``folder`` (MEDCNN_WEIGHTS_DIR) and restore the previous value after."""
    old = os.environ.get("MEDCNN_WEIGHTS_DIR")
    os.environ["MEDCNN_WEIGHTS_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("MEDCNN_WEIGHTS_DIR", None)
        else:
            os.environ["MEDCNN_WEIGHTS_DIR"] = old


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("weights"))
    with weights_env(folder):
        yield folder


def png_bytes(size: int = 96, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = (120 + 80 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 8, (size, size))).clip(0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def ct_small() -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(REPO / name), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, files) -> AppTest:
    at.file_uploader[0].set_value(files)
    at.run()
    assert not at.exception, at.exception
    return at


def table_with(at: AppTest, column: str):
    """The first dataframe with ``column`` (AppTest does not expose dataframe keys)."""
    for d in [*at.dataframe, *at.table]:
        if column in d.value.columns:
            return d.value
    raise AssertionError(f"no table with column {column!r}")


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [m.label + " " + str(m.value) for m in at.metric]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- landing
def test_landing_lists_models_device_and_pages(weights):
    at = page("app.py")
    assert "not a medical device" in at.warning[0].value
    df = at.table[0].value  # a static table: long cells wrap
    assert set(df["model"]) == {"cxr_pneumonia", "ct_covid"}
    assert "0.750" in df["AUC (95% CI)"].iloc[0]
    assert any("CPU" in c.value or "GPU" in c.value for c in at.caption)
    links = {p.proto.page for p in at.get("page_link")}
    assert {"Analyze", "Batch", "Model_card"} <= links


def test_pages_explain_missing_weights(tmp_path, weights, monkeypatch):
    monkeypatch.setenv("MEDCNN_WEIGHTS_DIR", str(tmp_path))
    for name in ("app.py", "pages/1_Analyze.py", "pages/2_Batch.py", "pages/3_Model_card.py"):
        at = page(name)
        assert any("No model weights" in i.value for i in at.info), name


# ----------------------------------------------------------------------------- analyze
def test_analyze_png_shows_probabilities_overlay_and_steps(weights):
    at = page("pages/1_Analyze.py")
    assert at.info[0].value.startswith("Upload")
    upload(at, ("chest.png", png_bytes(), "image/png"))
    assert not at.error
    body = texts(at)
    assert "Decision:" in body and "P(PNEUMONIA)" in body and "cxr_pneumonia" in body
    captions = [c for img in at.image for c in img.captions]
    assert any("Grad-CAM overlay" in c for c in captions)
    assert "normalize" in body and "1 x 1 x 64 x 64" in body  # last step = exact tensor
    assert {b.label for b in at.download_button} >= {"Download PDF report", "Download overlay PNG"}
    meta = table_with(at, "Field")
    assert dict(zip(meta["Field"], meta["Value"]))["Modality"] == "OT"


def test_analyze_dicom_ct_auto_model_window_and_no_identifiers(weights):
    at = page("pages/1_Analyze.py")
    upload(at, ("CT_small", ct_small(), "application/octet-stream"))  # no extension
    assert not at.error
    body = texts(at)
    assert "ct_covid" in body and "auto-chosen for CT" in body
    assert [w.value for w in at.warning].count("Scanner DICOM: this output was not validated on scanner slices.") == 1
    assert "CompressedSamples" not in body and "CT1" not in str(table_with(at, "Field"))
    assert at.selectbox(key="ct_preset").value == "model default"
    assert "preset:lung" in texts(at)  # the CT model's pipeline default
    at.selectbox(key="ct_preset").set_value("mediastinum").run()
    assert (at.slider(key="ct_level").value, at.slider(key="ct_width").value) == (40, 400)
    assert "preset:mediastinum" in texts(at)
    at.slider(key="ct_level").set_value(60).run()  # moving a slider makes the window custom
    at.slider(key="ct_width").set_value(350).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="ct_preset").value == "custom"
    assert "center=60" in texts(at) and "width=350" in texts(at)


def test_analyze_changing_method_rerenders_and_opacity_does_not_recompute(weights, monkeypatch):
    import medcnn.explain as explain_mod

    calls = []
    real = explain_mod.explain

    def counting(*args, **kwargs):
        calls.append(kwargs.get("method", args[3] if len(args) > 3 else "gradcam"))
        return real(*args, **kwargs)

    monkeypatch.setattr(explain_mod, "explain", counting)
    at = page("pages/1_Analyze.py")
    calls.clear()  # the page warms the models up on load
    upload(at, ("chest2.png", png_bytes(seed=5), "image/png"))
    assert calls == ["gradcam"]
    at.slider(key="opacity").set_value(0.8).run()
    at.selectbox(key="cmap").set_value("inferno").run()
    assert not at.exception and calls == ["gradcam"]  # overlay redrawn, map cached
    at.selectbox(key="method").set_value("integrated_gradients").run()
    assert not at.exception and not at.error
    assert calls == ["gradcam", "integrated_gradients"]
    assert any("Integrated Gradients overlay" in c for img in at.image for c in img.captions)
    cap = next(c.value for c in at.caption if "path steps" in c.value)
    assert re.search(r"\d+ path steps; attributions add up to the logit change within \d+\.\d%", cap), cap
    at.selectbox(key="method").set_value("guided_gradcam").run()
    assert any("fails the model-randomisation" in w.value for w in at.sidebar.warning)


def test_analyze_non_image_shows_error(weights):
    at = page("pages/1_Analyze.py")
    upload(at, ("notes.pdf", b"%PDF-1.4 not an image at all", "application/pdf"))
    assert at.error and "not an image" in at.error[0].value
    assert not at.metric


def test_analyze_unsupported_modality_is_not_analysed_with_the_reason(weights):
    from pydicom.data import get_testdata_file

    at = page("pages/1_Analyze.py")
    upload(at, ("mr", Path(get_testdata_file("MR_small.dcm")).read_bytes(), "application/dicom"))
    assert not at.error and "No model here reads MR images" in at.warning[-1].value


def test_analyze_model_override_refuses_wrong_modality(weights):
    at = page("pages/1_Analyze.py")
    at.selectbox(key="model_choice").set_value("cxr_pneumonia").run()
    upload(at, ("ct.dcm", ct_small(), "application/dicom"))
    assert at.error and "accepts DICOM modalities" in at.error[0].value


def dicom_sample(shared_data, name):
    """(name, bytes, mime) of a file in shared/data/dicom_samples, or skip when it is missing."""
    path = shared_data / "dicom_samples" / name
    if not path.is_file():
        pytest.skip(f"{name} not in shared data")
    return (name, path.read_bytes(), "application/dicom")


def test_analyze_real_cr_chest(weights, shared_data):
    at = page("pages/1_Analyze.py")
    upload(at, dicom_sample(shared_data, "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"))
    assert not at.error
    assert "cxr_pneumonia" in texts(at) and "auto-chosen for CR" in texts(at)


def test_analyze_multiframe_ct_frame_slider(weights, shared_data):
    at = page("pages/1_Analyze.py")
    upload(at, dicom_sample(shared_data, "eCT_Supplemental.dcm"))
    assert not at.error
    assert at.slider(key="frame").value == 1  # middle frame of 2
    first = texts(at)
    at.slider(key="frame").set_value(0).run()
    assert not at.exception and not at.error
    meta = table_with(at, "Field")
    assert dict(zip(meta["Field"], meta["Value"]))["Frame shown"] == "0"
    assert texts(at) != first


def test_analyze_sanity_button(weights):
    at = page("pages/1_Analyze.py")
    upload(at, ("chest.png", png_bytes(), "image/png"))
    at.button(key="sanity").click().run()
    assert not at.exception and not at.error
    verdicts = [e.value for e in [*at.success, *at.main.warning]]
    assert any("randomised" in v for v in verdicts), verdicts
    assert "spearman" in table_with(at, "spearman").columns
    at.slider(key="opacity").set_value(0.7).run()  # the result stays for the same map
    assert any("randomised" in e.value for e in [*at.success, *at.main.warning])


def test_analyze_sanity_on_an_empty_map_says_not_testable(weights, monkeypatch):
    from medcnn.app import state as appstate

    result = {"method": "gradcam", "testable": False, "passes": None, "steps": [], "final_spearman": None,
              "final_ssim": None, "threshold": 0.5, "reason": "the original map is empty"}
    monkeypatch.setattr(appstate, "sanity_upload", lambda *args, **kw: result)
    at = page("pages/1_Analyze.py")
    upload(at, ("chest.png", png_bytes(), "image/png"))
    at.button(key="sanity").click().run()
    assert not at.exception and not at.error
    assert not at.success  # never a green "Passes"
    assert any(i.value.startswith("Not testable: the original map is empty") for i in at.info), \
        [i.value for i in at.info]


# ----------------------------------------------------------------------------- batch
def test_batch_files_and_zip_with_a_bad_member(weights):
    at = page("pages/2_Batch.py")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/one.png", png_bytes(seed=1))
        zf.writestr("a/broken.txt", b"hello")
        zf.writestr("ct_slice", ct_small())
    upload(at, [("two.png", png_bytes(seed=2), "image/png"), ("set.zip", buf.getvalue(), "application/zip")])
    assert not at.error
    df = table_with(at, "decision")
    assert len(df) == 4
    row = df.set_index("file")
    assert row.loc["set.zip/a/broken.txt", "error"].startswith("not an image") or "not an image" in row.loc["set.zip/a/broken.txt", "error"]
    assert row.loc["set.zip/ct_slice", "model"] == "ct_covid"
    assert row.loc["two.png", "model"] == "cxr_pneumonia" and row.loc["two.png", "error"] == ""
    assert {b.label for b in at.download_button} >= {"Download CSV"}
    assert len([c for img in at.image for c in img.captions]) == 3


def test_batch_zip_guards():
    from medcnn.app import batch as app_batch
    from medcnn.io import ArchiveBudgetError

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.dcm", b"\0" * 5000)  # compresses ~100x
        for i in range(4):
            zf.writestr(f"img{i}.png", b"x" * 10)
        zf.writestr("__MACOSX/._img0.png", b"junk")
        zf.writestr(".hidden", b"junk")
    items = list(app_batch.expand_uploads([("set.zip", buf.getvalue())], max_members=3, max_member_bytes=1000))
    by_name = {i.name: i for i in items}
    assert "set.zip" in by_name and "only the first 3" in by_name["set.zip"].error
    assert by_name["set.zip/bomb.dcm"].data is None and "too large" in by_name["set.zip/bomb.dcm"].error
    assert [i.name for i in items if i.data is not None] == ["set.zip/img0.png", "set.zip/img1.png"]
    with pytest.raises(ArchiveBudgetError, match="would expand to 5,040 bytes"):  # nothing expanded
        app_batch.expand_uploads([("set.zip", buf.getvalue())], max_total_bytes=5015)
    assert len(app_batch.expand_uploads([("set.zip", buf.getvalue())], max_total_bytes=5040)) == 5
    bad = list(app_batch.expand_uploads([("bad.zip", b"PK\x03\x04 truncated")]))
    assert bad[0].data is None and "ZIP" in bad[0].error


# ----------------------------------------------------------------------------- model card
def test_model_card_page(weights):
    at = page("pages/3_Model_card.py")
    assert not at.error
    body = texts(at) + "\n".join(h.value for h in [*at.subheader, *at.header])
    assert "cxr_pneumonia" in body and "ct_covid" in body
    assert "Tests only." in body and "Random weights." in body
    tables = [d.value for d in at.dataframe]
    assert any("AUC" in t.columns and "0.750 (95% CI 0.500-0.900)" in set(t["AUC"]) for t in tables)
    assert any("group" in t.columns and {"AP", "PA"} <= set(t["group"]) for t in tables)
    # a confusion matrix per card from the stored counts, + ct_covid's ROC, PR and reliability
    # from the per-image scores stored in its card (no data, no button)
    assert len(at.image) == 5
    assert not any(b.key == "curves_ct_covid" for b in at.button)
    at.button(key="curves_cxr_pneumonia").click().run()
    assert not at.exception
    assert len(at.image) == 8  # + ROC, PR, reliability computed from the cxr card's data
    assert any("audit" in h.value.lower() for h in at.subheader)


def test_curves_come_from_stored_scores_else_need_the_data(weights, tmp_path):
    from medcnn.app import cards as app_cards
    from medcnn.models.card import ModelCard

    card = ModelCard.load(weights / "ct_covid.json")
    y, p = app_cards.score_split(str(card.path), 1.0, "test")
    assert y.tolist() == card.metrics["test"]["scores"]["y"] and p[0] == pytest.approx(0.9)
    del card.metrics["test"]["scores"]
    bare = card.save(tmp_path / "ct_covid.json")  # no scores and no data recorded
    assert not app_cards.has_stored_scores(ModelCard.load(bare), "test")
    with pytest.raises(ValueError, match="not available on this machine"):
        app_cards.score_split(str(bare), 2.0, "test")


def test_attention_location_line_reports_mass_outside_the_thorax():
    from medcnn.app import display as app_display

    display = np.full((128, 128), 0.8, np.float32)
    heat = np.zeros((128, 128), np.float32)
    heat[:6, :6] = 1.0  # all attention on the top-left corner: outside the chest, on the margin
    line = app_display.attention_location(display, heat)
    assert line.startswith("100% of the attention lies outside the estimated thorax")
    assert "100% on the image margins" in line
    assert app_display.attention_location(display, np.zeros_like(heat)) is None  # empty map: no claim


def test_ig_convergence_text():
    from medcnn.app import display as app_display

    ok = {"steps": 32, "rel_delta": 0.0042, "rel_local_error": 0.031, "converged": True, "tol": 0.01}
    assert app_display.ig_convergence_text(ok) == (
        " · 32 path steps; attributions add up to the logit change within 0.4% "
        "(segment errors without cancellation: 3.1%)")
    bad = {**ok, "steps": 256, "rel_delta": 0.02, "converged": False}
    assert "NOT within the 1% tolerance after 256 steps" in app_display.ig_convergence_text(bad)
    assert app_display.ig_convergence_text({"layer": "layer4"}) == ""  # not a path method
