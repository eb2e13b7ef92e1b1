"""AppTest of the Recalibrate page on the tiny models of test_pages (weights folder in MEDCNN_WEIGHTS_DIR)."""
from __future__ import annotations

import io
import json
import os
import zipfile

import pytest

from test_pages import make_weights, page, png_bytes, table_with, upload

PAGE = "pages/4_Recalibrate.py"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import torch

    folder = make_weights(tmp_path_factory.mktemp("recal_weights"))
    old = os.environ.get("MEDCNN_WEIGHTS_DIR")
    os.environ["MEDCNN_WEIGHTS_DIR"] = str(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield folder
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("MEDCNN_WEIGHTS_DIR", None)
    else:
        os.environ["MEDCNN_WEIGHTS_DIR"] = old


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def class_zip(classes: tuple[str, ...], n: int = 6) -> bytes:
    """``site/<class>/DOE_<i>.png`` for each class (a wrapper folder above the class folders)."""
    return zip_bytes({f"site/{label}/DOE_{c}_{i}.png": png_bytes(64, seed=300 + 50 * c + i)
                      for c, label in enumerate(classes) for i in range(n)})


def recal_page(weights, min_per_class: int = 5):
    at = page(PAGE)
    at.selectbox(key="recal_model").set_value("cxr_pneumonia")
    at.number_input(key="recal_min_per_class").set_value(min_per_class)
    at.select_slider(key="recal_n_boot").set_value(200)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_renders_and_asks_for_an_upload(weights):
    at = page(PAGE)
    assert at.title[0].value == "Per-site recalibration"
    assert any("Upload the site's labelled images" in i.value for i in at.info)
    assert not at.error


def test_class_folder_zip_shows_before_after_and_a_card_download(weights):
    at = upload(recal_page(weights), [("site.zip", class_zip(("NORMAL", "PNEUMONIA")), "application/zip")])
    assert not at.error, [e.value for e in at.error]
    rows = table_with(at, "before")
    assert {"quantity", "before", "after"} <= set(rows.columns)
    assert {"sensitivity", "specificity", "temperature", "threshold"} <= set(rows["quantity"])
    assert any("12 images used" in m.value and "NORMAL: 6" in m.value for m in at.markdown)
    assert len(at.image) == 3  # reliability before / after, ROC with both operating points
    assert [b.label for b in at.download_button] == ["Download recalibrated card (JSON)"]
    install = next(m.value for m in at.markdown if "Install" in m.value)
    assert "cp weights/cxr_pneumonia.pt weights/cxr_pneumonia_site.pt" in install
    assert "DOE" not in " ".join(m.value for m in at.markdown)  # no member names shown


def test_card_json_is_a_loadable_recalibrated_card(weights, tmp_path):
    """The download's content: the same helpers the page calls, installed as the page says."""
    import shutil

    from medcnn.app import recalibrate as app_recal
    from medcnn.inference import Predictor
    from medcnn.io import read_image
    from medcnn.models.card import ModelCard

    card = ModelCard.load(weights / "cxr_pneumonia.json")
    site = app_recal.collect_site([("SMITH_JOHN_site.zip", class_zip(("NORMAL", "PNEUMONIA")))], card.labels)
    result = app_recal.recalibrate_site(site.key, site, str(card.path), 0.0, 5, 50)
    data = json.loads(app_recal.card_json(card, result, "cxr_site_b", site.key))
    assert "SMITH" not in json.dumps(data) and ".zip" not in json.dumps(data)  # no uploaded file name
    assert data["training"]["recalibration"]["site_data"]["sha256"] == site.key
    assert data["name"] == "cxr_site_b" and data["training"]["recalibrated_from"]["card"] == "cxr_pneumonia"
    assert data["training"]["recalibration"]["site_data"]["counts"] == {"NORMAL": 6, "PNEUMONIA": 6}
    (tmp_path / "cxr_site_b.json").write_text(json.dumps(data))
    shutil.copyfile(card.weights_path, tmp_path / "cxr_site_b.pt")
    pred = Predictor(tmp_path / "cxr_site_b.json", device="cpu").predict(read_image(png_bytes(64, seed=1)))
    assert pred.model == "cxr_site_b" and pred.threshold == pytest.approx(data["threshold"])


def test_csv_plus_zip_with_patient_column(weights):
    members = {f"imgs/{i}.png": png_bytes(64, seed=400 + i) for i in range(12)}
    lines = ["path,label,patient_id"] + [f"imgs/{i}.png,{'PNEUMONIA' if i % 2 else 'NORMAL'},P{i // 2}"
                                         for i in range(12)] + ["imgs/missing.png,NORMAL,P99"]
    at = upload(recal_page(weights), [("labels.csv", "\n".join(lines).encode(), "text/csv"),
                                      ("images.zip", zip_bytes(members), "application/zip")])
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="recal_group_column").value == "patient_id"
    assert any("over 6 patients" in m.value for m in at.markdown)
    assert any("Skipped 1: listed in the CSV but not found in the ZIP" in c.value for c in at.caption)


def test_rerun_does_not_expand_the_zip_again(weights, monkeypatch):
    """Typing a new card name reruns the page: the members come from the session's cache."""
    opened: list[str] = []
    real = zipfile.ZipFile.open

    def counting(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            opened.append(getattr(name, "filename", name))
        return real(self, name, mode, *args, **kwargs)

    at = recal_page(weights)
    data = class_zip(("NORMAL", "PNEUMONIA"))
    monkeypatch.setattr(zipfile.ZipFile, "open", counting)
    at = upload(at, [("site.zip", data, "application/zip")])
    assert not at.error and len(opened) == 12
    at.text_input(key="recal_name").set_value("cxr_site_d").run()
    assert not at.exception and not at.error and len(opened) == 12
    assert any(b.label.startswith("Download recalibrated card") for b in at.download_button)


def test_one_class_zip_gives_the_clear_error(weights):
    at = upload(recal_page(weights), [("site.zip", class_zip(("NORMAL",)), "application/zip")])
    assert at.error
    msg = at.error[0].value
    assert "at least 5 of each class" in msg and "PNEUMONIA: 0 (5 more needed)" in msg
    assert not at.download_button


def test_unknown_csv_label_and_bad_name_are_messages(weights):
    lines = ["path,label", "a.png,NORMAL", "b.png,EFFUSION"]
    at = upload(recal_page(weights), [("labels.csv", "\n".join(lines).encode(), "text/csv"),
                                      ("images.zip", zip_bytes({"a.png": png_bytes(64)}), "application/zip")])
    assert at.error and "EFFUSION (1 rows)" in at.error[0].value
    at = upload(recal_page(weights), [("site.zip", class_zip(("NORMAL", "PNEUMONIA")), "application/zip")])
    at.text_input(key="recal_name").set_value("../evil").run()
    assert not at.exception and at.error and "not a usable card name" in at.error[0].value


def test_page_explains_missing_weights(tmp_path, weights, monkeypatch):
    monkeypatch.setenv("MEDCNN_WEIGHTS_DIR", str(tmp_path))
    at = page(PAGE)
    assert any("No model weights" in i.value for i in at.info)


def test_model_card_page_shows_an_installed_recalibrated_card(tmp_path, monkeypatch):
    """A card written by write_recalibrated next to its copied weights renders on the Model card page."""
    from medcnn.app import recalibrate as app_recal
    from medcnn.evaluation.site_card import recalibrated_card, write_recalibrated
    from medcnn.models.card import ModelCard

    folder = make_weights(tmp_path / "weights")
    card = ModelCard.load(folder / "cxr_pneumonia.json")
    site = app_recal.collect_site([("site.zip", class_zip(("NORMAL", "PNEUMONIA")))], card.labels)
    result = app_recal.recalibrate_site(site.key, site, str(card.path), 1.0, 5, 20)
    new = recalibrated_card(card, result.fields, result.report, "cxr_site_c", weights_sha256=result.weights_sha256,
                            data_sha256=site.key, command="test")
    write_recalibrated(card, new, folder / "cxr_site_c.json")
    monkeypatch.setenv("MEDCNN_WEIGHTS_DIR", str(folder))
    at = page("pages/3_Model_card.py")
    assert not at.error
    sets = {v for d in at.dataframe if "set" in d.value.columns for v in d.value["set"]}
    assert {"site", "site_before_recalibration", "original_test"} <= sets
