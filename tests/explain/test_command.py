"""``python -m medcnn explain``: overlay and JSON, calibrated probabilities, errors, --method choices."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from medcnn import models, preprocess
from medcnn.__main__ import main
from medcnn.cli import explain as explain_command
from medcnn.explain import METHODS, black_value
from medcnn.inference import Predictor
from medcnn.io import read_image
from medcnn.models.card import ModelCard



@pytest.fixture()
def tiny_checkpoint(tmp_path):
    """A seeded tinyresnet card at 32 px with a non-trivial temperature, and a PNG."""
    torch.manual_seed(0)
    model = models.create_model("tinyresnet", num_classes=2, in_chans=1)
    card = ModelCard(
        name="tiny", architecture="tinyresnet", modality="CXR", labels=["normal", "pneumonia"],
        positive_label="pneumonia", input_size=(32, 32),
        preprocessing=preprocess.default_config("CXR", size=32),
        target_layer=models.default_target_layer("tinyresnet"), temperature=2.5,
    )
    card_path = models.save_checkpoint(model, card, tmp_path / "w" / "tiny.pt")
    rng = np.random.default_rng(0)
    png = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 255, size=(40, 48), dtype=np.uint8)).save(png)
    return card_path, png


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_command_writes_overlay_and_json(tiny_checkpoint, tmp_path, capsys, method):
    card_path, png = tiny_checkpoint
    out = tmp_path / "overlay.png"
    sanity = ["--sanity"] if method == "gradcam" else []
    rc = main(["explain", str(png), "--method", method, "--model", str(card_path),
               "--out", str(out), "--json", "--target", "normal", *sanity])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["target"] == "normal" and r["method"] == method and out.read_bytes()[:4] == b"\x89PNG"
    assert set(r["probabilities"]) == {"normal", "pneumonia"}
    if sanity:
        assert isinstance(r["sanity"]["randomisation"]["passes"], bool)
        assert "deletion_auc" in r["sanity"]["deletion_insertion"]
    if method == "integrated_gradients":
        assert r["delta"] is not None and r["params"]["baseline_value"] == pytest.approx(-2.0)
        # The CLI passes no baseline value: explain's default (the pipeline's black) is used.
        assert r["params"]["black_from"] == "pipeline"
        # default: the 50-node rule of Captum's default call; the page's map-error wording is reported
        c = r["completeness"]
        assert c["steps"] == 50 and c["rule"] == "fixed" and 0 <= c["rel_delta"] <= c["rel_local_error"] + 1e-9
        assert "attributions add up to the logit change within" in c["text"] and "without cancellation" in c["text"]


def test_command_tol_selects_the_adaptive_rule(tiny_checkpoint, capsys):
    card_path, png = tiny_checkpoint
    assert main(["explain", str(png), "--method", "integrated_gradients", "--model", str(card_path),
                 "--json", "--tol", "0.05"]) == 0
    c = json.loads(capsys.readouterr().out)["completeness"]
    assert c["rule"] == "adaptive" and c["steps"] >= 16
    assert main(["explain", str(png), "--method", "integrated_gradients", "--model", str(card_path),
                 "--steps", "8", "--tol", "0.05"]) == 2
    assert "not both" in capsys.readouterr().err


def test_command_reports_the_predictors_calibrated_probabilities(tiny_checkpoint, capsys):
    card_path, png = tiny_checkpoint
    assert main(["explain", str(png), "--model", str(card_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    predictor = Predictor(card_path)
    expected = predictor.predict(read_image(str(png)), keep_steps=False).probabilities
    assert r["probabilities"] == pytest.approx(expected, abs=1e-6)
    # Temperature 2.5 is applied: the plain softmax of the logits differs.
    logits = torch.tensor(predictor.predict(read_image(str(png))).logits)
    plain = torch.softmax(logits, 0).tolist()
    assert r["probabilities"]["pneumonia"] != pytest.approx(plain[1], abs=1e-4)
    assert black_value(predictor.pipeline) == pytest.approx(-2.0)


def test_command_errors(tiny_checkpoint, tmp_path, capsys):
    card_path, png = tiny_checkpoint
    assert main(["explain", str(png), "--model", str(card_path), "--target", "cat"]) == 2
    assert "not one of the model's labels" in capsys.readouterr().err
    assert main(["explain", str(png), "--weights-dir", str(tmp_path / "empty")]) == 2
    assert "error:" in capsys.readouterr().err


def test_method_choices_are_the_registry(capsys):
    parser = argparse.ArgumentParser()
    explain_command.add_arguments(parser)
    assert "{" + ",".join(METHODS) + "}" in parser.format_usage()  # exactly the registry, in order
    for name in METHODS:
        assert parser.parse_args(["img.png", "--method", name]).method == name
    with pytest.raises(SystemExit):
        parser.parse_args(["img.png", "--method", "lime"])
    assert "invalid choice: 'lime'" in capsys.readouterr().err


@pytest.mark.parametrize("objective,expected", [(None, "logit difference (pneumonia - normal)"),
                                                ("difference", "logit difference (pneumonia - normal)"),
                                                ("logit", "pneumonia logit")])
def test_command_json_shows_the_objective_and_the_call(tiny_checkpoint, capsys, objective, expected):
    card_path, png = tiny_checkpoint
    extra = ["--objective", objective] if objective else []
    assert main(["explain", str(png), "--model", str(card_path), "--json", *extra]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["objective"] == r["params"]["objective"] == expected
    assert r["operating_point"] == pytest.approx(0.5)  # the card's default threshold
    assert r["called"] == (r["probabilities"]["pneumonia"] >= 0.5)
    assert (r["notice"] is None) == (r["called"] and not r["params"]["empty_map"])


def test_command_text_names_the_objective(tiny_checkpoint, capsys):
    card_path, png = tiny_checkpoint
    assert main(["explain", str(png), "--model", str(card_path), "--target", "normal"]) == 0
    assert "Grad-CAM of the logit difference (normal - pneumonia)" in capsys.readouterr().out


def test_command_gives_no_probabilities_and_no_map_for_an_image_the_gate_withholds(tiny_checkpoint, tmp_path, capsys):
    import pydicom
    from pydicom.data import get_testdata_file

    card_path, _ = tiny_checkpoint
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality, ds.BodyPartExamined = "CR", "KNEE"  # a knee film: outside what a chest model reads
    knee = tmp_path / "knee.dcm"
    ds.save_as(knee)
    out = tmp_path / "overlay.png"
    rc = main(["explain", str(knee), "--model", str(card_path), "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 1 and not out.exists()
    assert "NOT ANALYSED" in printed.err and "KNEE" in printed.err.upper() and "not written" in printed.err
    assert "pneumonia 0." not in printed.out + printed.err  # no probabilities
    rc = main(["explain", str(knee), "--model", str(card_path), "--json"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 1 and r["decision"] == "not analysed" and r["ood"]["level"] == "outside"
    assert "probabilities" not in r and r["out"] is None
