"""AppTest of the Case review page: a ZIP of cases stepped through, each computed once."""
from __future__ import annotations

import io
import zipfile

import pytest
import torch

from test_pages import make_weights, page, png_bytes, table_with, texts, upload, weights_env

PAGE = "pages/5_Case_review.py"
NAMES = ("Doe_Jane_19620101.png", "Roe_Richard_MRN123456.png", "Poe_Edgar_ward7.png")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("review_weights"))
    with weights_env(folder):
        yield folder


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(f"meeting/{name}", data)
    return buf.getvalue()


def short(data: bytes) -> str:
    from medcnn.app.state import digest

    return digest(data)[:8]


def counter(at) -> str:
    """The case counter heading ("Case k of n · image <hash>")."""
    heads = [m.value for m in at.markdown if m.value.startswith("### Case ")]
    assert len(heads) == 1, heads
    return heads[0][4:]


def everything(at) -> str:
    """All text the page shows, widgets' labels and the summary table included."""
    parts = [texts(at), *(e.value for e in [*at.error, *at.warning, *at.info, *at.subheader])]
    parts += [str(i.captions) for i in at.image]
    parts += [d.value.to_csv() for d in at.dataframe]
    return "\n".join(parts)


@pytest.fixture
def calls(monkeypatch):
    """Counts of real work: model forward passes (``Predictor.predict``) and explanations."""
    import streamlit as st

    import medcnn.explain as explain_mod
    from medcnn.inference import Predictor

    st.cache_data.clear()  # the shared caches must not hide a recomputation
    counts = {"predict": 0, "explain": 0}
    real_predict, real_explain = Predictor.predict, explain_mod.explain

    def predict(self, *args, **kwargs):
        counts["predict"] += 1
        return real_predict(self, *args, **kwargs)

    def explain(*args, **kwargs):
        counts["explain"] += 1
        return real_explain(*args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", predict)
    monkeypatch.setattr(explain_mod, "explain", explain)
    return counts


def test_review_steps_through_a_zip_and_never_recomputes(weights, calls):
    images = [png_bytes(96, seed=7101 + i) for i in range(3)]
    at = page(PAGE)
    assert any("Load a set of cases" in i.value for i in at.info)
    calls.update(predict=0, explain=0)  # the page warms the models up on first load

    upload(at, [("cases.zip", zip_of(list(zip(NAMES, images))), "application/zip")])
    assert not at.error
    assert counter(at) == f"Case 1 of 3 · image {short(images[0])}"
    assert calls["predict"] == 3  # every case predicted once, up front
    assert calls["explain"] == 2  # case 1's map, and case 2's warmed while case 1 is shown
    assert any("Grad-CAM overlay" in c for i in at.image for c in i.captions)
    assert "Decision: " in texts(at)
    assert at.button(key="review_prev").disabled and not at.button(key="review_next").disabled
    assert not at.file_uploader[0].value  # the set is taken and the uploader emptied: no file names shown

    at.button(key="review_next").click().run()
    assert not at.exception and counter(at) == f"Case 2 of 3 · image {short(images[1])}"
    assert calls == {"predict": 3, "explain": 3}
    at.button(key="review_next").click().run()
    assert not at.exception and counter(at) == f"Case 3 of 3 · image {short(images[2])}"
    assert at.button(key="review_next").disabled
    assert calls == {"predict": 3, "explain": 3}
    at.button(key="review_prev").click().run()
    assert not at.exception and counter(at) == f"Case 2 of 3 · image {short(images[1])}"
    assert calls == {"predict": 3, "explain": 3}  # returning to a case recomputes nothing

    at.slider(key="review_opacity").set_value(0.8).run()  # redraw only
    at.toggle(key="review_overlay").set_value(False).run()
    assert not at.exception and calls == {"predict": 3, "explain": 3}
    assert any("overlay off" in c for i in at.image for c in i.captions)

    body = everything(at)
    for name in NAMES + ("cases.zip", "meeting/", "Doe", "Jane", "MRN123456"):
        assert name not in body, f"file name part {name!r} shown"
    table = table_with(at, "Decision / findings")
    assert list(table["Case"]) == ["1", "2", "3"]
    assert list(table["Image"]) == [short(d) for d in images]

    at.button(key="review_clear").click().run()  # forget the set
    assert not at.exception and any("Load a set of cases" in i.value for i in at.info)


def test_compare_two_methods_side_by_side(weights, calls):
    at = upload(page(PAGE), [("cases.zip", zip_of([("a.png", png_bytes(96, seed=7201))]), "application/zip")])
    assert counter(at).startswith("Case 1 of 1")
    at.toggle(key="review_compare").set_value(True).run()
    at.selectbox(key="review_method2").set_value("occlusion").run()
    assert not at.exception and not at.error
    captions = [c for i in at.image for c in i.captions]
    assert any("Grad-CAM overlay" in c for c in captions) and any("Occlusion overlay" in c for c in captions)
    done = dict(calls)
    at.toggle(key="review_compare").set_value(False).run()
    at.toggle(key="review_compare").set_value(True).run()
    assert calls == done  # both maps kept


def test_a_scanner_slice_case_shows_the_cards_caveat_and_a_picture_case_does_not(weights, calls):
    from test_pages import ct_small

    caveat = "Scanner DICOM: this output was not validated on scanner slices."
    at = upload(page(PAGE), [("cases.zip", zip_of([("a.dcm", ct_small()), ("b.png", png_bytes(96, seed=7301))]),
                              "application/zip")])
    assert not at.exception and not at.error
    shown = [w.value for w in at.warning]
    at.button(key="review_next").click().run()
    assert shown.count(caveat) == 1 and caveat not in [w.value for w in at.warning]


def test_a_bad_file_becomes_a_case_with_its_error(weights, calls):
    good = [png_bytes(96, seed=7301), png_bytes(96, seed=7302)]
    members = [(NAMES[0], good[0]), ("Roe_Richard_notes.txt", b"just some text, not an image"), (NAMES[2], good[1])]
    at = upload(page(PAGE), [("cases.zip", zip_of(members), "application/zip")])
    assert not at.error and counter(at).startswith("Case 1 of 3")
    at.button(key="review_next").click().run()
    assert not at.exception
    assert counter(at) == f"Case 2 of 3 · image {short(members[1][1])}"
    assert at.error and "not an image" in at.error[0].value
    assert "Traceback" not in everything(at)
    assert not [c for i in at.image for c in i.captions if "overlay" in c]
    at.button(key="review_next").click().run()
    assert counter(at) == f"Case 3 of 3 · image {short(good[1])}" and not at.error
    table = table_with(at, "Decision / findings")
    assert table["Decision / findings"].iloc[1].startswith("Could not be analysed")
    assert "Roe" not in everything(at) and "notes.txt" not in everything(at)


def test_withheld_case_shows_no_probability_and_no_map(tmp_path, monkeypatch, calls):
    from test_ood_pages import fit_tiny_gate, noise_png

    folder = make_weights(tmp_path / "gated")
    fit_tiny_gate(folder)
    monkeypatch.setenv("MEDCNN_WEIGHTS_DIR", str(folder))
    at = upload(page(PAGE), [("n.png", noise_png(11), "image/png"), ("c.png", png_bytes(96, seed=3005), "image/png")])
    assert counter(at).startswith("Case 1 of 2")
    assert at.error and "Not analysed" in at.error[0].value
    assert "Decision: not analysed" in texts(at) and "P(PNEUMONIA) =" not in texts(at)
    assert not at.get("vega_lite_chart")
    assert [c for i in at.image for c in i.captions if c] == ["Model input (no explanation: image not analysed)"]
    assert at.toggle(key="review_overlay").disabled and at.slider(key="review_opacity").disabled
    table = table_with(at, "Out-of-distribution flag")
    assert table["Probability"].iloc[0] == "—" and table["Out-of-distribution flag"].iloc[0].startswith(
        "Not analysed: this image is outside what the model reads.")
    at.button(key="review_next").click().run()
    assert "Decision: not analysed" not in texts(at) and "P(PNEUMONIA) =" in texts(at)


def test_case_series_pdf_from_the_page(weights, calls):
    pypdf = pytest.importorskip("pypdf")
    images = [png_bytes(96, seed=7401 + i) for i in range(2)]
    at = upload(page(PAGE), [(n, d, "image/png") for n, d in zip(NAMES, images)])
    assert not at.download_button  # prepared on request only
    at.button(key="review_pdf_prepare").click().run()
    assert not at.exception and not at.error
    assert "Download case-series PDF" in {b.label for b in at.download_button}
    pdf = at.session_state["review_pdf"][1]
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 3  # the summary (short tiny-model cards) + one page per case
    text = " ".join(" ".join(p.extract_text().split()) for p in reader.pages)
    assert "Case 1 of 2 · image " + short(images[0]) in text and "Case 2 of 2 · image " + short(images[1]) in text
    assert text.count("Grad-CAM overlay") == 2
    for name in NAMES + ("Doe", "Jane"):
        assert name not in text and name.encode() not in pdf
    at.slider(key="review_opacity").set_value(0.7).run()  # other settings: prepare again
    assert not at.download_button


def test_load_cases_drops_names_and_caps_the_set():
    from medcnn.app import review

    data = [png_bytes(32, seed=i) for i in range(4)]
    cases = review.load_cases([(f"Patient_{i}.png", d) for i, d in enumerate(data)], max_cases=3)
    assert [c.number for c in cases] == [1, 2, 3, 4]
    assert [c.data for c in cases[:3]] == data[:3]
    assert cases[3].data is None and "1 more file(s) not loaded" in cases[3].error
    assert all("Patient" not in repr(c) + c.error for c in cases)
    assert cases[0].title(4) == f"Case 1 of 4 · image {short(data[0])}"
    bad = review.load_cases([("Smith.zip", b"PK\x03\x04 truncated")])
    assert bad[0].data is None and "ZIP" in bad[0].error and bad[0].title(1) == "Case 1 of 1 · no image"


# ----------------------------------------------------------------------------- model card page
def test_model_card_page_shows_every_field_as_tables_not_json(tmp_path, monkeypatch):
    """The shipped cards' nested records (training, experiments, audit) on the tiny test
    model: tables and charts only, never a JSON tree."""
    import json
    from pathlib import Path

    from medcnn.models.card import ModelCard

    folder = make_weights(tmp_path / "cards")
    shipped = json.loads((Path(__file__).resolve().parents[2] / "weights" / "cxr_pneumonia.json").read_text())
    card = ModelCard.load(folder / "cxr_pneumonia.json")
    card.training = {**shipped["training"], "data": card.training["data"]}
    card.experiments, card.audit = shipped["experiments"], shipped["audit"]
    card.metrics["calibration"] = shipped["metrics"]["calibration"]
    card.save(folder / "cxr_pneumonia.json")
    monkeypatch.setenv("MEDCNN_WEIGHTS_DIR", str(folder))

    at = page("pages/3_Model_card.py")
    assert not at.error and not at.get("json")
    splits = table_with(at, "total")
    assert list(splits["split"]) == ["train", "val"] and list(splits["total"]) == [512, 109]
    audit = table_with(at, "random_area")  # saliency metrics: one row per metric, mean and CI
    assert "outside_thorax" in set(audit["name"]) and "–" in audit["ci"].iloc[0]
    experiments = table_with(at, "run")
    assert len(experiments) == len(shipped["experiments"]) and "None" not in experiments.to_csv()
    assert any(w.value.startswith("WARNING: labels can be predicted") for w in at.warning)
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 4  # split counts, metrics with CIs, per-view CIs, training history
    hyper = [t.value for t in at.table if "field" in t.value.columns and "optimizer" in set(t.value["field"])]
    assert hyper and dict(zip(hyper[0]["field"], hyper[0]["value"]))["optimizer"] == "adamw"
