"""Predictor (calibrated probabilities, threshold, batching, thread safety) and model choice."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from medcnn.models.card import ModelCard
from medcnn.inference import Predictor, check_modality, choose_model, list_cards, predict_logits
from medcnn.io import ImageMeta, MedImage
from medcnn.evaluation.metrics import softmax_t



def save_card(weights: Path, name: str, modality: str = "CXR", labels=("NORMAL", "PNEUMONIA"),
              dicom=("CR", "DX"), **kw) -> Path:
    from medcnn.models import create_model, default_target_layer, save_checkpoint
    from medcnn.preprocess import default_config

    torch.manual_seed(0)
    card = ModelCard(name=name, architecture="simplecnn", modality=modality, labels=list(labels),
                     positive_label=labels[-1], input_size=(32, 32),
                     preprocessing=default_config(modality, 32),
                     target_layer=default_target_layer("simplecnn"), dicom_modalities=list(dicom), **kw)
    return save_checkpoint(create_model("simplecnn", num_classes=len(labels)).eval(), card,
                           weights / f"{name}.pt")


def image(seed: int = 0, modality: str = "OT", fmt: str = "png") -> MedImage:
    rng = np.random.default_rng(seed)
    px = (rng.random((40, 36)) * 255).astype(np.float32)
    return MedImage(px, ImageMeta(source_format=fmt, rows=40, columns=36, modality=modality))


@pytest.fixture()
def cxr(tmp_path) -> Path:
    return save_card(tmp_path / "weights", "cxr_pneumonia", temperature=1.7, threshold=0.3)


def test_prediction_is_calibrated_softmax_and_thresholded(cxr):
    pred = Predictor(cxr, device="cpu")
    res = pred.predict(image())
    probs = softmax_t(np.array([res.logits]), 1.7)[0]
    assert res.probabilities == pytest.approx({"NORMAL": probs[0], "PNEUMONIA": probs[1]})
    assert sum(res.probabilities.values()) == pytest.approx(1.0)
    assert res.positive_prob == pytest.approx(probs[1]) and res.threshold == 0.3
    assert res.above_threshold == (probs[1] >= 0.3)
    assert res.label == ("PNEUMONIA" if res.above_threshold else "NORMAL")
    assert res.model == "cxr_pneumonia" and res.seconds > 0
    assert tuple(res.pipeline_result.tensor.shape) == (1, 1, 32, 32)
    assert res.pipeline_result.steps  # kept for the app
    # the logits are the network's on the pipeline tensor
    direct = predict_logits(pred.model, res.pipeline_result.tensor)
    assert res.logits == pytest.approx(direct[0].tolist(), abs=1e-5)


def test_threshold_decides_binary_label(cxr):
    pred = Predictor(cxr, device="cpu")
    p = pred.predict(image()).positive_prob
    pred.card.threshold = min(1.0, p + 1e-6)
    assert pred.predict(image()).label == "NORMAL"
    pred.card.threshold = p
    low = pred.predict(image())
    assert low.label == "PNEUMONIA" and low.above_threshold


def test_multiclass_label_is_argmax(tmp_path):
    path = save_card(tmp_path, "three", labels=("A", "B", "C"), threshold=0.99)
    res = Predictor(path, device="cpu").predict(image())
    assert res.label == max(res.probabilities, key=res.probabilities.get)


def test_predict_batch_matches_single(cxr):
    pred = Predictor(cxr, device="cpu")
    imgs = [image(s) for s in range(4)]
    batch = pred.predict_batch(imgs)
    for img, b in zip(imgs, batch):
        single = pred.predict(img)
        assert b.logits == pytest.approx(single.logits, abs=1e-5)
        assert b.label == single.label
    assert pred.predict_batch([]) == []


def test_predictor_is_thread_safe(cxr):
    pred = Predictor(cxr, device="cpu")
    imgs = [image(s) for s in range(6)]
    expected = [pred.predict(i, keep_steps=False).logits for i in imgs]
    got: dict[int, list[float]] = {}

    def work(k: int) -> None:
        for _ in range(3):
            got[k] = pred.predict(imgs[k], keep_steps=False).logits

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(6):
        assert got[k] == pytest.approx(expected[k], abs=1e-5)
    assert not pred.model.training


def test_wrong_dicom_modality_rejected(cxr):
    pred = Predictor(cxr, device="cpu")
    with pytest.raises(ValueError, match="MR"):
        pred.predict(image(modality="MR", fmt="dicom"))
    pred.predict(image(modality="DX", fmt="dicom"))  # accepted
    card = ModelCard.load(cxr)
    check_modality(card, image(modality="OT").meta)  # PNG/JPEG: any model


def test_missing_weights_is_card_error(tmp_path):
    from medcnn.models.card import CardError

    path = save_card(tmp_path, "x")
    path.with_suffix(".pt").unlink()
    with pytest.raises(CardError, match="weights"):
        Predictor(path, device="cpu")


@pytest.fixture()
def weights_dir(tmp_path) -> Path:
    w = tmp_path / "weights"
    save_card(w, "aaa_cxr")  # another CXR card, sorted first
    save_card(w, "cxr_pneumonia")
    save_card(w, "cxr_findings")  # the default chest X-ray card, preferred over the others
    save_card(w, "ct_covid", modality="CT", labels=("NonCOVID", "COVID"), dicom=("CT",))
    return w


@pytest.mark.parametrize("modality, fmt, expected", [
    ("CT", "dicom", "ct_covid"),
    ("CR", "dicom", "cxr_findings"),
    ("DX", "dicom", "cxr_findings"),
    ("OT", "png", "cxr_findings"),
    ("OT", "jpeg", "cxr_findings"),
])
def test_choose_model_by_modality(weights_dir, modality, fmt, expected):
    assert choose_model(image(modality=modality, fmt=fmt).meta, weights_dir).stem == expected


@pytest.mark.parametrize("modality", ["MR", "US", "NM", "MG"])
def test_choose_model_rejects_other_modalities(weights_dir, modality):
    with pytest.raises(ValueError, match=rf"no model for modality {modality}.*supported are CT"):
        choose_model(image(modality=modality, fmt="dicom").meta, weights_dir)


def test_choose_model_falls_back_and_reports_missing_family(tmp_path):
    w = tmp_path / "w"
    save_card(w, "my_cxr")
    assert choose_model(image().meta, w).stem == "my_cxr"
    with pytest.raises(ValueError, match="no CT model card"):
        choose_model(image(modality="CT", fmt="dicom").meta, w)


def test_list_cards_skips_broken_and_weightless(weights_dir):
    (weights_dir / "broken.json").write_text("{not json")
    orphan = save_card(weights_dir, "orphan")
    orphan.with_suffix(".pt").unlink()
    with pytest.warns(UserWarning, match="broken"):
        names = [c.name for c in list_cards(weights_dir)]
    assert names == ["aaa_cxr", "ct_covid", "cxr_findings", "cxr_pneumonia"]
