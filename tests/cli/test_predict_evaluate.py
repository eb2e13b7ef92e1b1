"""``python -m medcnn predict`` / ``evaluate``: JSON schemas, per-file errors, --by, plots, card writing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medcnn.__main__ import main
from medcnn.models.card import ModelCard
from medcnn.evaluation.metrics import compute_metrics


REPO = Path(__file__).resolve().parents[2]
LABELS = ["NORMAL", "PNEUMONIA"]
EVAL_KEYS = {"n", "auc", "auc_ci", "accuracy", "balanced_accuracy", "precision", "recall",
             "specificity", "f1", "kappa", "pr_auc", "ece", "threshold", "confusion_matrix", "per_class"}
# the scoring engine's row (medcnn.scoring.ROW_KEYS): error_stage, called, findings (multi-label
# cards; None here), routed (how the model was chosen) and caveat (what the card says beside a result on
# this kind of input) were added to the earlier keys
PRED_KEYS = {"file", "ok", "error", "model", "probabilities", "label", "positive_prob",
             "above_threshold", "threshold", "seconds", "warnings", "decision", "ood",
             "error_stage", "called", "findings", "routed", "caveat"}


@pytest.fixture()
def project(tmp_path) -> dict[str, Path]:
    """weights/cxr_pneumonia.{pt,json} (random simplecnn, 32x32) + 24 PNGs + labels.csv (with OTHER)."""
    from PIL import Image

    from medcnn.models import create_model, default_target_layer, save_checkpoint
    from medcnn.preprocess import default_config

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = ["path,label,split,patient_id,view_position"]
    for i in range(24):
        label = "OTHER" if i % 8 == 7 else LABELS[i % 2]
        arr = rng.integers(0, 150, (36, 40)) + (70 if label == "PNEUMONIA" else 0)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{label},{('val', 'test')[i % 3 == 0]},p{i},{('AP', 'PA')[i % 4 < 2]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    card = ModelCard(name="cxr_pneumonia", architecture="simplecnn", modality="CXR",
                     labels=list(LABELS), positive_label="PNEUMONIA", input_size=(32, 32),
                     preprocessing=default_config("CXR", 32),
                     target_layer=default_target_layer("simplecnn"), dicom_modalities=["CR", "DX"],
                     threshold=0.4, temperature=1.5)
    card_path = save_checkpoint(create_model("simplecnn").eval(), card, tmp_path / "weights" / "cxr_pneumonia.pt")
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n")
    return {"root": tmp_path, "card": card_path, "csv": tmp_path / "labels.csv",
            "weights": tmp_path / "weights", "bad": bad, "good": tmp_path / "img" / "0.png",
            "good2": tmp_path / "img" / "1.png"}


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    rc = main(argv)
    out = capsys.readouterr().out
    return rc, json.loads(out)  # exactly one JSON object on stdout


# --------------------------------------------------------------------------- predict
def test_predict_json_schema(project, capsys):
    rc, out = run_json(capsys, ["predict", str(project["good"]), str(project["good2"]), "--json",
                                "--weights-dir", str(project["weights"]), "--device", "cpu"])
    assert rc == 0 and list(out) == ["results"] and len(out["results"]) == 2
    for r in out["results"]:
        assert set(r) == PRED_KEYS
        assert r["ok"] and r["error"] is None and r["model"] == "cxr_pneumonia"
        assert set(r["probabilities"]) == set(LABELS)
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)
        assert r["positive_prob"] == pytest.approx(r["probabilities"]["PNEUMONIA"])
        assert r["above_threshold"] == (r["positive_prob"] >= 0.4) and r["threshold"] == 0.4
        assert r["label"] == ("PNEUMONIA" if r["above_threshold"] else "NORMAL")
        assert r["called"] == [r["label"]] and r["error_stage"] is None
        assert r["routed"] == "auto-chosen for PNG/JPEG"  # no --model; the card has no gate to reroute


def test_predict_bad_file_among_good_ones(project, capsys):
    files = [project["good"], project["bad"], project["root"] / "missing.png", project["good2"]]
    rc, out = run_json(capsys, ["predict", *map(str, files), "--json", "--model", "cxr_pneumonia",
                                "--weights-dir", str(project["weights"]), "--device", "cpu"])
    assert rc == 1
    ok = [r["ok"] for r in out["results"]]
    assert ok == [True, False, False, True]
    for r in out["results"]:
        assert set(r) == PRED_KEYS
        if not r["ok"]:
            assert r["error"] and r["probabilities"] is None and r["label"] is None
            assert r["error_stage"] == "read" and r["called"] is None and r["routed"] is None
        else:
            assert r["routed"] == "named by the caller"
    assert "image" in out["results"][1]["error"].lower()


def test_predict_human_output(project, capsys):
    rc = main(["predict", str(project["good"]), str(project["bad"]), "--model", str(project["card"]),
               "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "cxr_pneumonia" in cap.out and "threshold 0.400" in cap.out
    assert "notes.txt: ERROR" in cap.err


def test_predict_unknown_model_is_one_error(project, capsys):
    rc = main(["predict", str(project["good"]), "--model", "nope", "--weights-dir", str(project["weights"])])
    assert rc == 2
    assert "cxr_pneumonia" in capsys.readouterr().err  # lists the available cards


# --------------------------------------------------------------------------- evaluate
def evaluate_argv(project, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(project["card"]), "--data", str(project["csv"]),
            "--classes", "NORMAL,PNEUMONIA", "--n-boot", "30", "--device", "cpu", *extra]


def test_evaluate_json_schema(project, capsys):
    rc, m = run_json(capsys, evaluate_argv(project, "--json", "--split", "test"))
    assert rc == 0 and EVAL_KEYS <= set(m)
    assert m["n"] == 7 and m["threshold"] == 0.4 and m["split"] == "test"
    assert len(m["auc_ci"]) == 2 and m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
    assert np.array(m["confusion_matrix"]).sum() == 7
    assert set(m["per_class"]) == set(LABELS)
    assert {"precision", "recall", "f1", "support"} == set(m["per_class"]["NORMAL"])


def test_evaluate_by_matches_subsets_computed_separately(project, capsys):
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    rc, m = run_json(capsys, evaluate_argv(project, "--json", "--by", "view_position"))
    assert rc == 0 and m["by"]["column"] == "view_position"
    groups = m["by"]["groups"]
    assert set(groups) == {"AP", "PA"}
    assert sum(g["n"] for g in groups.values()) == m["n"] == 21
    # independent path: the app's Predictor per image, then metrics per subset
    import pandas as pd

    df = pd.read_csv(project["csv"])
    df = df[df.label != "OTHER"]
    pred = Predictor(project["card"], device="cpu")
    prob = np.array([pred.predict(read_image(project["root"] / p)).positive_prob for p in df.path])
    y = (df.label == "PNEUMONIA").to_numpy().astype(int)
    for view, g in groups.items():
        mask = (df.view_position == view).to_numpy()
        ref = compute_metrics(y[mask], prob[mask], 0.4, labels=LABELS, n_boot=30)
        assert g["n"] == ref["n"] and g["confusion_matrix"] == ref["confusion_matrix"]
        for k in ("auc", "accuracy", "f1", "kappa", "pr_auc"):
            assert g[k] == pytest.approx(ref[k], abs=1e-6), (view, k)
        for k in ("ece", "brier"):
            assert g[k] == pytest.approx(ref[k], abs=1e-3), (view, k)


def test_evaluate_unknown_labels_error(project, capsys):
    argv = [a for a in evaluate_argv(project) if a not in ("--classes", "NORMAL,PNEUMONIA")]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "OTHER (3 rows)" in err and "NORMAL, PNEUMONIA" in err


def test_evaluate_table_and_plots(project, capsys):
    plots = project["root"] / "plots"
    rc = main(evaluate_argv(project, "--plots", str(plots), "--by", "view_position"))
    out = capsys.readouterr().out
    assert rc == 0 and "auc" in out and "view_position = AP" in out
    for name in ("roc", "pr", "reliability", "confusion"):
        png = plots / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.filterwarnings("ignore:every validation row")  # tiny val set may be separable
def test_evaluate_calibrate_write_card(project, capsys):
    rc, out = run_json(capsys, evaluate_argv(project, "--calibrate", "--write-card", "--json",
                                             "--by", "view_position"))
    card = ModelCard.load(project["card"])
    assert rc == 0 and out["written"]
    assert card.temperature == pytest.approx(out["temperature"]) and card.threshold == pytest.approx(out["threshold"])
    assert card.metrics["calibration"]["fitted_on"] == "val"
    assert card.metrics["test"]["n"] == 7 and card.metrics["val"]["n"] == 14
    assert set(card.metrics["test_by_view_position"]["groups"]) == {"AP", "PA"}


def test_evaluate_card_key(project, capsys):
    rc = main(evaluate_argv(project, "--split", "test", "--write-card", "--card-key", "external_test", "--json"))
    capsys.readouterr()
    assert rc == 0
    saved = ModelCard.load(project["card"]).metrics["external_test"]
    assert saved["n"] == 7 and saved["data"] == [f"{project['root'].name}/labels.csv"]
    assert main(evaluate_argv(project, "--write-card")) == 2  # needs --card-key
    assert main(evaluate_argv(project, "--calibrate", "--split", "test")) == 2
    assert "drop --split" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["predict", "evaluate"])
def test_help(cmd):
    out = subprocess.run([sys.executable, "-m", "medcnn", cmd, "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--json" in out.stdout


def test_evaluate_reports_the_gate_flag_rate(tmp_path):
    """With a gated card, evaluate reports the share of images the gate flags."""
    import sys as _sys

    _sys.path.insert(0, str(REPO / "tests" / "ood"))
    from test_gate import chest_like  # noqa: E402

    from medcnn.evaluation.evaluate import metrics_from_scores, score_dataset
    from medcnn.models import ModelCard, create_model, save_checkpoint
    from medcnn.ood import OODGate
    from medcnn.ood import validate as v
    from medcnn.ood.features import FeatureExtractor, default_layers
    from medcnn.preprocess import Pipeline, default_config

    torch.manual_seed(0)
    model = create_model("simplecnn", num_classes=2).eval()
    card = ModelCard(name="g", architecture="simplecnn", modality="CXR", labels=["N", "P"], positive_label="P",
                     input_size=(64, 64), preprocessing=default_config("CXR", 64), target_layer="block3")
    save_checkpoint(model, card, tmp_path / "g.pt")
    pipe, rng = Pipeline.from_config(card.preprocessing), np.random.default_rng(0)
    extract = FeatureExtractor(model, default_layers("simplecnn"), grid=3)
    images = [v.synthetic_images("noise", 1, seed=i)[0] for i in range(2)]
    gate = OODGate.fit(v.features_of(extract, pipe, [_img(chest_like(rng)) for _ in range(60)]),
                       v.features_of(extract, pipe, [_img(chest_like(rng)) for _ in range(30)]),
                       extract.layers, 3, components=16)
    card = ModelCard.load(tmp_path / "g.json")
    card.ood = {"file": "g.ood.pt", "sha256": gate.save(tmp_path / "g.ood.pt")}
    card.save(card.path)
    lines = ["path,label,split"]
    for i in range(6):
        Image.fromarray(chest_like(rng).astype(np.uint8)).save(tmp_path / f"c{i}.png")
        lines.append(f"c{i}.png,{'P' if i % 2 else 'N'},test")
    for i, img in enumerate(images):
        Image.fromarray(img.pixels.astype(np.uint8)).save(tmp_path / f"n{i}.png")
        lines.append(f"n{i}.png,P,test")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    scores = score_dataset(tmp_path / "g.json", tmp_path / "labels.csv", "test")
    m = metrics_from_scores(scores, n_boot=0)
    assert m["ood"]["n"] == 8 and m["ood"]["outside"] == pytest.approx(2 / 8)
    assert scores.ood_levels[-2:] == ["outside", "outside"]


def _img(pixels):
    from medcnn.io import ImageMeta, MedImage

    return MedImage(np.ascontiguousarray(pixels, dtype=np.float32),
                    ImageMeta(source_format="png", rows=pixels.shape[0], columns=pixels.shape[1]))


def test_predict_a_folder_scores_the_images_in_it(project, capsys):
    """A folder is searched recursively and its images are found by content (no --engine needed);
    a folder without images is one clear error."""
    sub = project["root"] / "img" / "nested"
    sub.mkdir()
    (sub / "scan").write_bytes(project["good"].read_bytes())  # no extension: found by content
    (sub / "readme.txt").write_text("not an image\n")
    rc, out = run_json(capsys, ["predict", str(project["root"] / "img"), "--json",
                                "--weights-dir", str(project["weights"]), "--device", "cpu"])
    assert rc == 0
    files = [r["file"] for r in out["results"]]
    assert len(files) == 25 and all(r["ok"] for r in out["results"])
    assert any(f.endswith("nested/scan") for f in files) and not any(f.endswith(".txt") for f in files)
    empty = project["root"] / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--weights-dir", str(project["weights"])]) == 2
    assert "no image files" in capsys.readouterr().err
