"""The out-of-distribution gate: separation on a tiny model, persistence, no effect on probabilities."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medcnn.io import ImageMeta, MedImage
from medcnn.models import ModelCard, create_model, save_checkpoint
from medcnn.ood import OODGate, OODResult
from medcnn.ood import validate as v
from medcnn.ood.features import FeatureExtractor, default_layers, pool_features
from medcnn.preprocess import Pipeline, default_config

REPO = Path(__file__).resolve().parents[2]


def chest_like(rng: np.random.Generator, side: int = 96) -> np.ndarray:
    """A bright frame with two dark, vertically elongated 'lung fields' side by side (jittered)."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    img = 0.75 + 0.05 * rng.normal(size=(side, side))
    for cx in (0.3, 0.7):
        cx += rng.normal(0, 0.02)
        cy, ry, rx = 0.5 + rng.normal(0, 0.02), 0.3 + rng.normal(0, 0.02), 0.13 + rng.normal(0, 0.01)
        img[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = 0.25 + rng.normal(0, 0.03)
    return (np.clip(img, 0, 1) * 255).astype(np.float32)


def as_image(pixels: np.ndarray) -> MedImage:
    return MedImage(np.ascontiguousarray(pixels, dtype=np.float32),
                    ImageMeta(source_format="png", rows=pixels.shape[0], columns=pixels.shape[1]))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model("simplecnn", num_classes=2).eval()
    pipe = Pipeline.from_config(default_config("CXR", 64))
    extract = FeatureExtractor(model, default_layers("simplecnn"), grid=3)
    rng = np.random.default_rng(0)
    fit = [as_image(chest_like(rng)) for _ in range(120)]
    val = [as_image(chest_like(rng)) for _ in range(60)]
    test = [as_image(chest_like(rng)) for _ in range(60)]
    gate = OODGate.fit(v.features_of(extract, pipe, fit), v.features_of(extract, pipe, val),
                       extract.layers, grid=3, components=16)
    return model, pipe, extract, gate, test


def rate(gate, extract, pipe, images) -> float:
    return v.flag_rates(v.verdicts_of(gate, extract, pipe, images))["flagged"]


def test_pool_features_shape_and_values():
    fmap = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    out = pool_features(fmap, grid=3)
    assert out.shape == (2, 3 * 10)
    assert out[0, 0].item() == pytest.approx(fmap[0, 0, :2, :2].mean().item())  # first grid cell
    assert out[0, 27].item() == pytest.approx(fmap[0, 0].std(unbiased=False).item())  # channel 0 std
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pool_features(torch.zeros(2, 3))


def test_extractor_logits_equal_the_model(tiny):
    model, pipe, extract, _, test = tiny
    x = torch.cat([pipe(img, keep_steps=False).tensor for img in test[:4]])
    logits, feats = extract(x)
    with torch.inference_mode():
        assert torch.allclose(logits, model(x), atol=1e-6)
    assert [f.shape[0] for f in feats] == [4] * len(extract.layers)
    with pytest.raises(ValueError, match="not found"):
        FeatureExtractor(model, ["no.such.layer"])


def test_gate_separates_in_distribution_from_transformed_and_synthetic(tiny):
    _, pipe, extract, gate, test = tiny
    assert rate(gate, extract, pipe, test) <= 0.10  # unseen in-distribution images
    assert rate(gate, extract, pipe, v.transformed(test, "rotated_90")) >= 0.9
    assert rate(gate, extract, pipe, v.transformed(test, "inverted")) >= 0.9
    for kind in ("noise", "ramp", "blank", "text"):
        assert rate(gate, extract, pipe, v.synthetic_images(kind, 12, side=96)) >= 0.9, kind


def test_thresholds_come_from_validation_quantiles(tiny):
    _, _, _, gate, _ = tiny
    assert 1.0 < gate.caution <= gate.refuse
    assert gate.assess(0.5).level == "ok"
    assert gate.assess(gate.caution + 1e-6).level == "unusual"
    verdict = gate.assess(gate.refuse * 2)
    assert verdict.level == "outside" and verdict.withheld and "not used" in verdict.reasons[0]


def test_gate_round_trips_through_its_file(tiny, tmp_path):
    _, pipe, extract, gate, test = tiny
    feats = v.features_of(extract, pipe, test[:8])
    sha = gate.save(tmp_path / "g.ood.pt")
    again = OODGate.load(tmp_path / "g.ood.pt", sha256=sha)
    np.testing.assert_allclose(again.score(feats), gate.score(feats), rtol=1e-5)
    assert (again.caution, again.refuse, again.layers, again.grid) == (gate.caution, gate.refuse, gate.layers, gate.grid)
    with pytest.raises(ValueError, match="checksum"):
        OODGate.load(tmp_path / "g.ood.pt", sha256="0" * 64)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        OODGate.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not found"):
        OODGate.load(tmp_path / "missing.pt")


def test_fit_refuses_too_few_validation_images(tiny):
    _, pipe, extract, _, test = tiny
    feats = v.features_of(extract, pipe, test[:10])
    with pytest.raises(ValueError, match="at least 20 validation images"):
        OODGate.fit(feats, feats, extract.layers, grid=3)


def test_a_rotated_image_is_diagnosed_as_rotated(tiny):
    _, pipe, extract, gate, test = tiny
    verdicts = v.verdicts_of(gate, extract, pipe, v.transformed(test[:12], "rotated_90"))
    diagnosed = [r for r in verdicts if r.withheld and any("rotated" in t for t in r.reasons)]
    assert len(diagnosed) >= 9  # most rotated films get the orientation reason, not only "unusual"
    assert all(not r.flagged for r in v.verdicts_of(gate, extract, pipe, test[:5])
               if r.score <= gate.caution)


def test_result_escalates_but_never_lowers():
    r = OODResult()
    r.escalate("outside", "a")
    r.escalate("unusual", "b")
    assert r.level == "outside" and r.reasons == ["a", "b"] and r.to_dict()["flagged"] is True


# ------------------------------------------------------------------ fit-ood + Predictor
def _write_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def fitted_card(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ood_model")
    rng = np.random.default_rng(1)
    lines = ["path,label,split,age"]
    for split, n in (("train", 60), ("val", 40), ("test", 20)):
        for i in range(n):
            _write_png(folder / f"{split}{i}.png", chest_like(rng))
            lines.append(f"{split}{i}.png,{'A' if i % 2 else 'B'},{split},{10 if i == 0 else 50}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    ood = folder / "ood"
    ood.mkdir()
    olines = ["path,label,category"]
    for i in range(10):
        _write_png(ood / f"n{i}.png", rng.uniform(0, 255, (96, 96)))
        olines.append(f"n{i}.png,noise,noise")
    (ood / "labels.csv").write_text("\n".join(olines) + "\n")
    torch.manual_seed(0)
    model = create_model("simplecnn", num_classes=2).eval()
    card = ModelCard(name="tiny", architecture="simplecnn", modality="CXR", labels=["B", "A"], positive_label="A",
                     input_size=(64, 64), preprocessing=default_config("CXR", 64), target_layer="block3",
                     dicom_modalities=["CR", "DX"])
    save_checkpoint(model, card, folder / "tiny.pt")
    run = subprocess.run([sys.executable, "-m", "medcnn", "fit-ood", "--model", str(folder / "tiny.json"),
                          "--data", str(folder / "labels.csv"), "--check", str(ood / "labels.csv"),
                          "--components", "16", "--n-transformed", "10", "--n-synthetic", "4"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return folder / "tiny.json", run.stdout


def test_fit_ood_writes_the_card_section(fitted_card):
    card_path, out = fitted_card
    section = json.loads(card_path.read_text())["ood"]
    assert (card_path.parent / section["file"]).is_file() and len(section["sha256"]) == 64
    assert section["fitted_on"]["n"] == 60 and section["fitted_on"]["n_threshold"] == 40
    measured = section["measured"]
    assert measured["outside"]["ood/noise"]["flagged"] == 1.0
    assert "patients under 18" in " ".join(measured["in_distribution"])
    assert set(v.SYNTHETIC) <= {k.split(" ", 1)[1].replace(" ", "_") for k in measured["outside"] if k.startswith("synthetic")}
    assert "not read" in out and "thresholds:" in out


def test_predictor_with_gate_keeps_probabilities_and_reports_ood(fitted_card):
    from medcnn.inference import Predictor

    card_path, _ = fitted_card
    gated = Predictor(card_path)
    plain = Predictor(card_path)
    plain.gate = None  # the same network without the gate
    rng = np.random.default_rng(5)
    images = [as_image(chest_like(rng)) for _ in range(3)] + [as_image(rng.uniform(0, 255, (96, 96)))]
    with_gate, without = gated.predict_batch(images), plain.predict_batch(images)
    for a, b in zip(with_gate, without):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
        assert a.label == b.label
        assert b.ood.score is None and a.ood.score is not None
    assert with_gate[-1].ood.withheld and with_gate[-1].decision == "not analysed"
    assert with_gate[-1].to_dict()["ood"]["level"] == "outside"


def test_predict_cli_json_carries_the_verdict(fitted_card, tmp_path):
    card_path, _ = fitted_card
    noise = tmp_path / "noise.png"
    _write_png(noise, np.random.default_rng(9).uniform(0, 255, (96, 96)))
    run = subprocess.run([sys.executable, "-m", "medcnn", "predict", str(noise), "--model", str(card_path), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    entry = json.loads(run.stdout)["results"][0]
    assert entry["ood"]["flagged"] is True and entry["ood"]["level"] == "outside"
    assert entry["decision"] == "not analysed" and entry["ood"]["reasons"]
    text = subprocess.run([sys.executable, "-m", "medcnn", "predict", str(noise), "--model", str(card_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "NOT ANALYSED" in text.stdout


def test_tampered_gate_file_is_a_card_error(fitted_card, tmp_path):
    import shutil

    from medcnn.inference import Predictor
    from medcnn.models import CardError

    card_path, _ = fitted_card
    copy = tmp_path / "copy"
    shutil.copytree(card_path.parent, copy)
    ood_file = copy / json.loads(card_path.read_text())["ood"]["file"]
    ood_file.write_bytes(ood_file.read_bytes() + b"x")
    with pytest.raises(CardError, match="checksum"):
        Predictor(copy / "tiny.json")
