"""The Batch page scores through the one engine (:class:`medcnn.scoring.Scorer`): in batches, one file at a
time when a batch fails unexpectedly, errors as rows, each image read and predicted once, and a rerun
redraws without scoring again. What the table shows is tested page by page in test_pages, test_routing,
test_findings_app and test_ood_pages."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from test_pages import make_weights, page, png_bytes, table_with, upload, weights_env


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("batch_weights"))
    with weights_env(folder):
        yield folder


@pytest.fixture
def passes(monkeypatch):
    """Sizes of the forward passes (``predict_batch``) and single predictions (``predict``) made."""
    from medcnn.inference import Predictor

    seen: dict[str, list[int]] = {"batch": [], "one": []}
    batch, one = Predictor.predict_batch, Predictor.predict

    def counting_batch(self, images, *args, **kwargs):
        seen["batch"].append(len(images))
        return batch(self, images, *args, **kwargs)

    def counting_one(self, image, *args, **kwargs):
        seen["one"].append(1)
        return one(self, image, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_batch", counting_batch)
    monkeypatch.setattr(Predictor, "predict", counting_one)
    return seen


def items(n: int, seed: int = 0):
    from medcnn.app.batch import BatchItem

    return [BatchItem(f"img{i}.png", png_bytes(seed=seed + i)) for i in range(n)]


def test_files_are_scored_in_batches_each_read_once_with_the_engines_rows(weights, passes, monkeypatch):
    import medcnn.scoring
    from medcnn.app.batch import BATCH_SIZE, score_items, table_row
    from medcnn.scoring import ROW_KEYS

    reads: list[int] = []
    real = medcnn.scoring.read_image
    monkeypatch.setattr(medcnn.scoring, "read_image", lambda data, *a, **k: reads.append(1) or real(data, *a, **k))
    results = score_items(items(BATCH_SIZE + 2), "cxr_pneumonia")
    assert passes == {"batch": [BATCH_SIZE, 2], "one": []}  # one pass per chunk, no prediction again
    assert len(reads) == BATCH_SIZE + 2  # each file decoded once
    assert all(list(r.row) == list(ROW_KEYS) and r.row["ok"] for r in results)  # the engine's rows
    assert {r.row["routed"] for r in results} == {"chosen in the sidebar"}
    assert all(r.heatmap is not None and r.heatmap.shape == r.display.shape for r in results)
    assert [table_row(r)["file"] for r in results] == [f"img{i}.png" for i in range(BATCH_SIZE + 2)]


def test_a_batch_that_fails_unexpectedly_is_scored_one_file_at_a_time(weights, passes, monkeypatch):
    from medcnn.app.batch import BatchItem, score_items, table_row
    from medcnn.inference import Predictor

    batch = Predictor.predict_batch

    def fails_on_two(self, images, *args, **kwargs):  # a TypeError: nothing the engine expects
        if len(images) > 1 or images[0].pixels.mean() > 200:
            raise TypeError("unexpected")
        return batch(self, images, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_batch", fails_on_two)
    white = io.BytesIO()
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(white, format="PNG")
    results = score_items([*items(2, seed=40), BatchItem("white.png", white.getvalue())], "cxr_pneumonia")
    rows = [table_row(r) for r in results]
    assert [r["error"] for r in rows] == ["", "", "unexpected error (TypeError)"]
    assert [r["decision"] in ("NORMAL", "PNEUMONIA") for r in rows] == [True, True, False]
    assert results[2].row["error"] == "TypeError: unexpected" and results[2].heatmap is None


def test_a_scanner_slice_row_carries_the_cards_caveat_and_a_picture_row_does_not(weights):
    from medcnn.app.batch import BatchItem, score_items, table_row

    from test_pages import ct_small

    ct, png = (table_row(r) for r in score_items([BatchItem("ct.dcm", ct_small()), *items(1, seed=80)]))
    assert (ct["model"], ct["caveat"]) == ("ct_covid", "Scanner DICOM: this output was not validated on scanner slices.")
    assert png["model"] == "cxr_pneumonia" and png["caveat"] == ""


def test_an_unknown_model_and_an_unreadable_member_are_rows(weights):
    from medcnn.app.batch import BatchItem, score_items, table_row

    rows = [table_row(r) for r in score_items(items(2), "no_such_model")]
    assert all("model 'no_such_model' not found" in r["error"] for r in rows)
    bad = score_items([BatchItem("set.zip/x.png", error="too large")])[0]
    assert (table_row(bad)["error"], bad.row["error_stage"]) == ("too large", "read")


def test_a_rerun_redraws_without_scoring_again_and_new_options_score_again(weights, passes):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            z.writestr(f"s/{i}.png", png_bytes(seed=60 + i))
    at = upload(page("pages/2_Batch.py"), [("set.zip", archive.getvalue(), "application/zip")])
    first = table_with(at, "decision")
    scored = list(passes["batch"])  # the page's first run also warms the models up (one blank image each)
    assert scored[-1] == 3 and len(at.image) == 3
    at.slider(key="batch_opacity").set_value(0.3).run()
    assert not at.exception and passes["batch"] == scored  # the same results, redrawn
    assert table_with(at, "decision").equals(first)
    at.selectbox(key="batch_model_choice").set_value("cxr_pneumonia").run()
    assert passes["batch"] == [*scored, 3]
    assert set(table_with(at, "decision")["routed"]) == {"chosen in the sidebar"}


def test_the_csv_has_the_documented_columns(weights):
    from medcnn.app.batch import BATCH_COLUMNS, rows_to_csv, score_items, table_row

    rows = [table_row(r) for r in score_items(items(2, seed=70))]
    header = rows_to_csv(rows).decode().splitlines()[0].split(",")
    assert header == list(BATCH_COLUMNS)
    assert [r["routed"] for r in rows] == ["auto-chosen for PNG/JPEG"] * 2
