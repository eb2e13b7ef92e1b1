"""AppTest of the Recalibrate page on the tiny models of test_pages (weights folder in MEDCNN_WEIGHTS_DIR)."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from test_pages import make_weights, page, png_bytes, table_with, upload, weights_env

# the tiny-model helpers of the command's tests (a last layer that reads brightness, and its images)
_spec = importlib.util.spec_from_file_location(
    "site_cli_helpers", Path(__file__).resolve().parents[1] / "evaluation" / "test_site_cli.py")
site_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site_cli)

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


def informative_folder(folder: Path) -> Path:
    """make_weights, with cxr_pneumonia reading brightness (dark NORMAL, bright PNEUMONIA) and a card whose
    temperature (5) and threshold (0.9) are off for such a site."""
    from medcnn.models.card import ModelCard

    make_weights(folder)
    card = ModelCard.load(folder / "cxr_pneumonia.json")
    card.temperature, card.threshold = 5.0, 0.9
    card.save(folder / "cxr_pneumonia.json")
    site_cli.reads_brightness(folder / "cxr_pneumonia.json", 1)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, weights):
    """Weights folders made once per module: informative, gated, with a findings model."""
    from test_findings_app import save_findings_model
    from test_ood_pages import fit_tiny_gate

    informative = informative_folder(tmp_path_factory.mktemp("recal_informative"))
    gated = make_weights(tmp_path_factory.mktemp("recal_gated"))
    fit_tiny_gate(gated)
    findings = make_weights(tmp_path_factory.mktemp("recal_findings"))
    save_findings_model(findings)
    return {"informative": informative, "gated": gated, "findings": findings}


@pytest.fixture
def informative_weights(folders):
    with weights_env(folders["informative"]) as folder:
        yield folder


@pytest.fixture
def gated(folders):
    with weights_env(folders["gated"]) as folder:
        yield folder


@pytest.fixture
def findings_weights(folders):
    with weights_env(folders["findings"]) as folder:
        yield folder


def bright_dark_zip(n: int = 12) -> bytes:
    return zip_bytes({f"site/{label}/DOE_{c}_{i}.png": site_cli.png(90 + 60 * c, seed=700 + 50 * c + i)
                      for c, label in enumerate(("NORMAL", "PNEUMONIA")) for i in range(n)})


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


def recal_page(weights, min_per_class: int = 5, model: str = "cxr_pneumonia"):
    at = page(PAGE)
    at.selectbox(key="recal_model").set_value(model)
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


def test_class_folder_zip_shows_held_out_figures_and_keeps_the_card_when_nothing_helps(weights):
    """The tiny model's scores are random for these images: no refit is shown to help, so no card."""
    at = upload(recal_page(weights), [("site.zip", class_zip(("NORMAL", "PNEUMONIA")), "application/zip")])
    assert not at.error, [e.value for e in at.error]
    rows = table_with(at, "before (held-out)")
    assert {"quantity", "before (held-out)", "after (held-out)", "change"} <= set(rows.columns)
    assert {"sensitivity", "specificity", "balanced accuracy", "ECE (calibration error)"} <= set(rows["quantity"])
    assert "[" in rows["before (held-out)"].iloc[0]  # with its CI
    components = table_with(at, "decision")
    assert list(components["decision"]) == ["kept", "kept"] and components["why"].str.len().min() > 20
    left = table_with(at, "withheld by the gate")
    assert list(left["class"]) == ["NORMAL", "PNEUMONIA"] and list(left["withheld by the gate"]) == ["0 (0%)"] * 2
    assert any("12 images used" in m.value and "NORMAL: 6" in m.value for m in at.markdown)
    assert len(at.image) == 3  # held-out before / after with CIs, reliability before / after (held-out)
    assert any("Nothing to change" in s.value for s in at.success)
    assert not at.download_button
    assert "DOE" not in " ".join(m.value for m in at.markdown)  # no member names shown


def test_a_shifted_site_gets_a_loadable_card(informative_weights, tmp_path):
    """The download's content: the same helpers the page calls, installed as the page says."""
    import shutil

    from medcnn.app import recalibrate as app_recal
    from medcnn.inference import Predictor
    from medcnn.io import read_image
    from medcnn.models.card import ModelCard

    card = ModelCard.load(informative_weights / "cxr_pneumonia.json")
    site = app_recal.collect_site([("SMITH_JOHN_site.zip", bright_dark_zip())], card.labels)
    result = app_recal.recalibrate_site(site.key, site, str(card.path), 0.0, 5, 200)
    assert result.fields["changed"] and result.components[1]["decision"] == "refit"
    data = json.loads(app_recal.card_json(card, result, "cxr_site_b", site.key))
    assert "SMITH" not in json.dumps(data) and ".zip" not in json.dumps(data)  # no uploaded file name
    assert data["training"]["recalibration"]["site_data"]["sha256"] == site.key
    assert data["name"] == "cxr_site_b" and data["training"]["recalibrated_from"]["card"] == "cxr_pneumonia"
    assert data["training"]["recalibration"]["site_data"]["counts"] == {"NORMAL": 12, "PNEUMONIA": 12}
    (tmp_path / "cxr_site_b.json").write_text(json.dumps(data))
    shutil.copyfile(card.weights_path, tmp_path / "cxr_site_b.pt")
    pred = Predictor(tmp_path / "cxr_site_b.json", device="cpu").predict(read_image(site_cli.png(150, 1)))
    assert pred.model == "cxr_site_b" and pred.threshold == pytest.approx(data["threshold"])


def test_the_page_offers_the_card_of_a_shifted_site(informative_weights):
    at = upload(recal_page(informative_weights), [("site.zip", bright_dark_zip(), "application/zip")])
    assert not at.error, [e.value for e in at.error]
    assert "refit" in list(table_with(at, "decision")["decision"])
    assert [b.label for b in at.download_button] == ["Download recalibrated card (JSON)"]
    install = next(m.value for m in at.markdown if "Install" in m.value)
    assert "cp weights/cxr_pneumonia.pt weights/cxr_pneumonia_site.pt" in install


def test_withheld_images_are_shown_per_class(gated):
    """Noise images among the positives are withheld by the gate: counted in their class, not dropped."""
    from test_ood_pages import noise_png

    members = {f"site/NORMAL/a{i}.png": png_bytes(96, seed=3100 + i) for i in range(6)}
    members |= {f"site/PNEUMONIA/b{i}.png": png_bytes(96, seed=3200 + i) for i in range(6)}
    members |= {f"site/PNEUMONIA/c{i}.png": noise_png(i) for i in range(3)}
    at = upload(recal_page(gated), [("site.zip", zip_bytes(members), "application/zip")])
    assert not at.error, [e.value for e in at.error]
    left = table_with(at, "withheld by the gate").set_index("class")
    assert left.loc["PNEUMONIA", "withheld by the gate"] == "3 (33%)" and left.loc["PNEUMONIA", "listed"] == "9"
    assert left.loc["NORMAL", "listed"] == "6"  # (one of the tiny gate's in-distribution images is withheld too)
    assert any("PNEUMONIA: 3 of 9 withheld" in c.value for c in at.caption)


def test_multilabel_model_takes_a_finding_and_the_label_marking_it(findings_weights):
    lines = ["path,label,patient_id"] + [f"imgs/{i}.png,{('Pneumonia', 'Normal', 'Other')[i % 3]},P{i // 2}"
                                         for i in range(18)]
    members = {f"imgs/{i}.png": png_bytes(64, seed=500 + i) for i in range(18)}
    at = recal_page(findings_weights, model="cxr_findings")
    assert at.selectbox(key="recal_finding").value == "Effusion"
    at.selectbox(key="recal_finding").set_value("Nodule").run()
    at = upload(at, [("labels.csv", "\n".join(lines).encode(), "text/csv"),
                     ("images.zip", zip_bytes(members), "application/zip")])
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="recal_positive").options == ["Normal", "Other", "Pneumonia"]
    at.selectbox(key="recal_positive").set_value("Pneumonia").run()
    assert not at.error, [e.value for e in at.error]
    assert any("for **Nodule**" in m.value and "not Pneumonia: 12" in m.value and "Pneumonia: 6" in m.value
               for m in at.markdown)


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


def test_rerun_does_not_expand_the_zip_again(informative_weights, monkeypatch):
    """Typing a new card name reruns the page: the members come from the session's cache."""
    opened: list[str] = []
    real = zipfile.ZipFile.open

    def counting(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            opened.append(getattr(name, "filename", name))
        return real(self, name, mode, *args, **kwargs)

    at = recal_page(informative_weights)
    data = bright_dark_zip()
    monkeypatch.setattr(zipfile.ZipFile, "open", counting)
    at = upload(at, [("site.zip", data, "application/zip")])
    assert not at.error and len(opened) == 24
    at.text_input(key="recal_name").set_value("cxr_site_d").run()
    assert not at.exception and not at.error and len(opened) == 24
    assert any(b.label.startswith("Download recalibrated card") for b in at.download_button)


def test_one_class_zip_gives_the_clear_error(weights):
    at = upload(recal_page(weights), [("site.zip", class_zip(("NORMAL",)), "application/zip")])
    assert at.error
    msg = at.error[0].value
    assert "at least 5 of each class" in msg and "PNEUMONIA: 0 (5 more needed)" in msg
    assert not at.download_button


def test_unknown_csv_label_and_bad_name_are_messages(informative_weights):
    lines = ["path,label", "a.png,NORMAL", "b.png,EFFUSION"]
    at = upload(recal_page(informative_weights), [("labels.csv", "\n".join(lines).encode(), "text/csv"),
                                                  ("images.zip", zip_bytes({"a.png": png_bytes(64)}), "application/zip")])
    assert at.error and "EFFUSION (1 rows)" in at.error[0].value
    at = upload(recal_page(informative_weights), [("site.zip", bright_dark_zip(), "application/zip")])
    at.text_input(key="recal_name").set_value("../evil").run()
    assert not at.exception and at.error and "not a usable card name" in at.error[0].value


def test_page_explains_missing_weights(tmp_path, weights, monkeypatch):
    monkeypatch.setenv("MEDCNN_WEIGHTS_DIR", str(tmp_path))
    at = page(PAGE)
    assert any("No model weights" in i.value for i in at.info)


def test_model_card_page_shows_an_installed_recalibrated_card(tmp_path, monkeypatch, weights):
    """A card written by write_recalibrated next to its copied weights renders on the Model card page."""
    from medcnn.app import recalibrate as app_recal
    from medcnn.evaluation.site_card import recalibrated_card, write_recalibrated
    from medcnn.models.card import ModelCard

    folder = informative_folder(tmp_path / "weights")
    card = ModelCard.load(folder / "cxr_pneumonia.json")
    site = app_recal.collect_site([("site.zip", bright_dark_zip())], card.labels)
    result = app_recal.recalibrate_site(site.key, site, str(card.path), 1.0, 5, 200)
    new = recalibrated_card(card, result.fields, result.report, "cxr_site_c", weights_sha256=result.weights_sha256,
                            data_sha256=site.key, command="test")
    write_recalibrated(card, new, folder / "cxr_site_c.json")
    monkeypatch.setenv("MEDCNN_WEIGHTS_DIR", str(folder))
    at = page("pages/3_Model_card.py")
    assert not at.error
    sets = {v for d in at.dataframe if "set" in d.value.columns for v in d.value["set"]}
    assert {"site", "site_before_recalibration", "original_test"} <= sets


def test_each_site_image_is_decoded_once(informative_weights, monkeypatch):
    """The engine decodes the bytes collect_site took from the ZIP, once per image; nothing else decodes."""
    import medcnn.scoring
    from medcnn.app import recalibrate as app_recal

    decoded: list[bytes] = []
    read_image = medcnn.scoring.read_image
    monkeypatch.setattr(medcnn.scoring, "read_image",
                        lambda source, *a, **k: decoded.append(source) or read_image(source, *a, **k))
    site = app_recal.collect_site([("site.zip", bright_dark_zip(10))], ["NORMAL", "PNEUMONIA"])
    app_recal.recalibrate_site.clear()
    result = app_recal.recalibrate_site(site.key, site, str(informative_weights / "cxr_pneumonia.json"), 0.0, 5, 50)
    assert result.report["n_images"] == len(site.data) == 20
    assert len(decoded) == 20 and [id(d) for d in decoded] == [id(d) for d in site.data]
