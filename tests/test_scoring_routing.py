"""The scoring engine routes like the app (:func:`medcnn.routing.route`): with no model given, a PNG the
chest X-ray model's gate withholds is asked of the CT model, those images together in one pass; a
named model is never rerouted; the row's ``routed`` says how the model was chosen.

The predictors are stand-ins over real card files (those of :mod:`test_routing_rule`) whose gate
verdict follows the image's grey level, so which model answers each image is known exactly.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcnn.inference import NOT_ANALYSED, Prediction
from medcnn.models.catalogue import load_card
from medcnn.ood import OODResult
from medcnn.routing import NAMED
from medcnn.scoring import ROW_KEYS, Scorer
from test_routing_rule import BOTH, LOOKS_CT, REROUTED, write_cards


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# grey level -> the families whose gate accepts it: bright films are X-rays, dark ones CT slices
BRIGHT, DARK, GREY = 200, 20, 120


class StandIn:
    """A predictor of one card whose gate accepts the grey levels of its family (score 1), and
    withholds the others (CXR score 10 / refusal 4, CT 3 / 2: a withheld image looks more like CT)."""

    def __init__(self, card_path: Path, fail: bool = False):
        self.card = load_card(card_path)
        self.fail = fail
        self.batches: list[int] = []

    def _one(self, image) -> Prediction:
        if self.fail:
            raise ValueError("preprocessing failed")
        level = int(image.pixels.mean())
        accepts = level == (BRIGHT if self.card.modality == "CXR" else DARK)
        score, refuse = (1.0, 4.0) if accepts else ((10.0, 4.0) if self.card.modality == "CXR" else (3.0, 2.0))
        ood = OODResult(level="ok" if accepts else "outside", score=score, refuse_threshold=refuse)
        labels = self.card.labels
        return Prediction(probabilities={labels[0]: 0.75, labels[1]: 0.25}, logits=[1.0, 0.0], label=labels[0],
                          positive_prob=0.25, above_threshold=False, threshold=0.5, model=self.card.name,
                          seconds=0.0, ood=ood, called=[labels[0]])

    def predict_batch(self, images, **_):
        self.batches.append(len(images))
        return [self._one(img) for img in images]

    def predict(self, image, **_):
        return self.predict_batch([image])[0]


@pytest.fixture()
def folder(tmp_path) -> Path:
    return write_cards(tmp_path / "weights", BOTH)


def scorer(folder: Path, model=None, fail_ct: bool = False, **kw) -> tuple[Scorer, dict[str, StandIn]]:
    stand_ins = {name: StandIn(folder / f"{name}.json", fail=fail_ct and name == "ct_covid")
                 for name in ("cxr_pneumonia", "ct_covid")}

    class _Scorer(Scorer):
        def predictor(self, card_path):  # None: the given predictor
            return super().predictor(None) if card_path is None else stand_ins[Path(card_path).stem]

    return _Scorer(model, weights_dir=folder, **kw), stand_ins


SOURCES = [("film.png", png(BRIGHT)), ("slice.png", png(DARK)), ("grey.png", png(GREY)), ("slice2.png", png(DARK))]


def test_auto_routes_each_png_like_the_app_and_asks_the_ct_model_in_one_pass(folder):
    engine, stand_ins = scorer(folder, batch_size=8)
    rows = engine.rows(SOURCES)
    assert [r["model"] for r in rows] == ["cxr_pneumonia", "ct_covid", "cxr_pneumonia", "ct_covid"]
    assert [r["routed"] for r in rows] == ["auto-chosen for PNG/JPEG", REROUTED,
                                           f"auto-chosen for PNG/JPEG; {LOOKS_CT}", REROUTED]
    assert [r["decision"] for r in rows] == ["NORMAL", "NonCOVID", NOT_ANALYSED, "NonCOVID"]
    assert [r["ood"]["level"] for r in rows] == ["ok", "ok", "outside", "ok"]
    assert all(list(r) == list(ROW_KEYS) and r["ok"] and r["error"] is None for r in rows)
    assert rows[1]["probabilities"] == {"NonCOVID": 0.75, "COVID": 0.25} and rows[1]["called"] == ["NonCOVID"]
    # one pass per model: the four films, then the three the X-ray gate withheld
    assert (stand_ins["cxr_pneumonia"].batches, stand_ins["ct_covid"].batches) == ([4], [3])


def test_scored_card_path_and_prediction_are_the_answering_models(folder):
    engine, _ = scorer(folder, keep_images=True)
    scored = engine.score(SOURCES[:3])
    assert [s.card_path for s in scored] == [folder / "cxr_pneumonia.json", folder / "ct_covid.json",
                                             folder / "cxr_pneumonia.json"]
    assert [s.prediction.model for s in scored] == ["cxr_pneumonia", "ct_covid", "cxr_pneumonia"]


@pytest.mark.parametrize("named", ["card", "predictor"])
def test_a_named_model_is_never_rerouted(folder, named):
    engine, stand_ins = scorer(folder, batch_size=8)
    if named == "card":
        engine.model = folder / "cxr_pneumonia.json"
    else:
        engine, _ = scorer(folder, model=stand_ins["cxr_pneumonia"], batch_size=8)
    rows = engine.rows(SOURCES)
    assert {r["model"] for r in rows} == {"cxr_pneumonia"} and {r["routed"] for r in rows} == {NAMED}
    assert [r["decision"] for r in rows] == ["NORMAL", NOT_ANALYSED, NOT_ANALYSED, NOT_ANALYSED]
    assert stand_ins["ct_covid"].batches == []


def test_a_failing_fallback_is_the_rows_error(folder):
    engine, _ = scorer(folder, fail_ct=True, keep_images=True)
    film, slice_ = engine.score(SOURCES[:2])
    assert film.row["ok"] and film.row["model"] == "cxr_pneumonia"
    assert (slice_.row["ok"], slice_.row["error_stage"], slice_.row["error"]) == (False, "predict",
                                                                                 "ValueError: preprocessing failed")
    assert slice_.prediction is None and slice_.card_path == folder / "ct_covid.json"
    assert slice_.row["model"] is None and slice_.row["probabilities"] is None and slice_.row["routed"] is None


def test_a_modality_no_model_reads_is_still_the_resolvers_error(folder):
    from pydicom.data import get_testdata_file

    engine, _ = scorer(folder)
    row = engine.rows([("mr.dcm", Path(get_testdata_file("MR_small.dcm")).read_bytes())])[0]
    assert (row["ok"], row["error_stage"], row["routed"]) == (False, "model", None)
    assert row["error"].startswith("ValueError: no model for modality MR")


def test_a_card_the_folder_cannot_serve_is_a_row_warning_not_printed(folder, recwarn):
    (folder / "broken.json").write_text("{not json")
    engine, _ = scorer(folder)
    rows = engine.rows(SOURCES[:2])
    assert [r["model"] for r in rows] == ["cxr_pneumonia", "ct_covid"]
    assert all(len([w for w in r["warnings"] if "skipping" in w and "broken.json" in w]) == 1 for r in rows)
    assert not [str(w.message) for w in recwarn]


def test_a_loader_serves_the_models_and_a_given_model_says_where_it_was_named(folder):
    stand_ins = {name: StandIn(folder / f"{name}.json") for name in ("cxr_pneumonia", "ct_covid")}
    loaded: list[str] = []

    def loader(card_path: Path) -> StandIn:
        loaded.append(card_path.stem)
        return stand_ins[card_path.stem]

    rows = Scorer(weights_dir=folder, loader=loader, batch_size=8).rows(SOURCES)
    assert [r["model"] for r in rows] == ["cxr_pneumonia", "ct_covid", "cxr_pneumonia", "ct_covid"]
    assert loaded == ["cxr_pneumonia", "ct_covid"]  # each card loaded once, through the loader
    named = Scorer(folder / "ct_covid.json", loader=loader, named="chosen in the sidebar").rows(SOURCES[:1])
    assert (named[0]["model"], named[0]["routed"]) == ("ct_covid", "chosen in the sidebar")
